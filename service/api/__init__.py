"""HTTP routes, one module per resource, and their shared dependencies."""

from fastapi import APIRouter

from service.api import routes_dicomweb, routes_health, routes_metrics, routes_model, routes_oip, routes_predict

api_router = APIRouter()
for _module in (routes_predict, routes_model, routes_health, routes_metrics, routes_oip, routes_dicomweb):
    api_router.include_router(_module.router)
