"""`python -m service`: read the settings from the environment and run uvicorn."""

from __future__ import annotations

import logging

import uvicorn
from pydantic import ValidationError

from service.app import create_app
from service.config import Settings


def main() -> None:
    try:
        settings = Settings()
    except ValidationError as exc:
        raise SystemExit(f"invalid SERVE_* settings:\n{exc}") from None
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
