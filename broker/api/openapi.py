"""The OpenAPI 3.1 document, built from the same route declarations the server runs."""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from broker.api.routing import API_PREFIX, ApiRouter

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}


def build_openapi(routers: Sequence[ApiRouter], version: str) -> dict[str, object]:
    models: set[type[BaseModel]] = set()
    for router in routers:
        for route in router.routes:
            models.update(m for m in (route.body, route.response) if m is not None)
    ordered = sorted(models, key=lambda m: m.__name__)
    refs, defs = models_json_schema(
        [(m, "validation") for m in ordered], ref_template="#/components/schemas/{model}"
    )
    # pydantic names each schema: the class's name, or, where two models share one, a name
    # with its module in it; a route points at whatever name its model was given.
    ref_of = {model: refs[(model, "validation")]["$ref"] for model in ordered}
    schemas: dict[str, object] = dict(defs.get("$defs", {}))
    schemas["Error"] = _ERROR
    paths: dict[str, dict[str, object]] = {}
    for router in routers:
        for route in router.routes:
            params: list[dict[str, object]] = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in re.findall(r"{(\w+)}", route.path)
            ]
            params += [
                {
                    "name": q.name,
                    "in": "query",
                    "required": False,
                    "description": q.description,
                    "schema": {"type": q.kind},
                }
                for q in route.query
            ]
            responses: dict[str, object] = {
                "default": {
                    "description": "error",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
            }
            if route.response is not None:
                ref: dict[str, object] = {"$ref": ref_of[route.response]}
                schema = {"type": "array", "items": ref} if route.many else ref
                responses[str(route.status)] = {
                    "description": "success",
                    "content": {"application/json": {"schema": schema}},
                }
            else:
                responses[str(route.status)] = {"description": "success"}
            op: dict[str, object] = {
                "summary": route.summary,
                "tags": [route.tag],
                "operationId": f"{route.method.lower()}_{route.handler.__name__}",
                "parameters": params,
                "responses": responses,
            }
            if route.body is not None:
                op["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": ref_of[route.body]}}},
                }
            if route.public:
                op["security"] = []
            elif route.scope:
                op["x-scope"] = route.scope
            paths.setdefault(API_PREFIX + route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Secondline broker API", "version": version},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
