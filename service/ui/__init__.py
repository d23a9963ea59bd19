"""The web page for clinicians and demos: `GET /`, its local assets and the model card route.

Everything the page needs is served from `service/ui/static/`; the page talks to the public API only.
"""

from service.ui.routes import router as ui_router

__all__ = ["ui_router"]
