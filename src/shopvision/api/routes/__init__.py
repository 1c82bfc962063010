"""The API's routes, a module per resource: inference (classify), search (the page, search, more like this),
products (the catalog's products and photos) and operations (health, readiness, metrics, guarded docs)."""

from shopvision.api.routes import inference, operations, products, search

ROUTERS = (search.router, inference.router, products.router, operations.router)

__all__ = ["ROUTERS", "inference", "operations", "products", "search"]
