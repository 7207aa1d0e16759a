"""Customers: adding, listing, showing, and changing the language of their session notes."""

from __future__ import annotations

from broker import staff_store
from broker.api.routing import ApiContext, ApiRouter
from broker.api.staff import CustomerChange, CustomerCreate, CustomerOut, customer_out
from broker.errors import NotFoundError

# The same tag as the accounts' routes: one section of the API's description.
router = ApiRouter(tag="staff")


@router.route(
    "POST",
    "/customers",
    summary="Add a customer",
    scope="admin",
    body=CustomerCreate,
    response=CustomerOut,
    status=201,
)
async def add_customer(ctx: ApiContext) -> CustomerOut:
    body = ctx.payload(CustomerCreate)
    s = ctx.services
    async with s.db() as db, db.begin():
        c = await staff_store.add_customer(
            db, body.name, body.display_name, s.clock(), body.language
        )
    await s.audit.record(
        actor=ctx.principal.name, action="customer.add", target=c.name, source=ctx.source
    )
    return customer_out(c)


@router.route("GET", "/customers", summary="List customers", response=CustomerOut, many=True)
async def list_customers(ctx: ApiContext) -> list[CustomerOut]:
    allowed = ctx.principal.customers
    async with ctx.services.db() as db:
        rows = await staff_store.list_customers(db)
    return [customer_out(c) for c in rows if allowed is None or c.name in allowed]


@router.route("GET", "/customers/{name}", summary="Show a customer", response=CustomerOut)
async def show_customer(ctx: ApiContext) -> CustomerOut:
    name = staff_store.valid_customer_name(ctx.path("name"))
    allowed = ctx.principal.customers
    if allowed is not None and name not in allowed:
        raise NotFoundError(f"there is no customer {name!r}; see `secondline customer list`")
    async with ctx.services.db() as db:
        c = await staff_store.get_customer(db, name)
    return customer_out(c)


@router.route(
    "PATCH",
    "/customers/{name}",
    summary="Change a customer's settings (the language of its session notes)",
    scope="admin",
    body=CustomerChange,
    response=CustomerOut,
)
async def change_customer(ctx: ApiContext) -> CustomerOut:
    body = ctx.payload(CustomerChange)
    name = staff_store.valid_customer_name(ctx.path("name"))
    language = staff_store.valid_note_language(body.language)
    s = ctx.services
    async with s.db() as db, db.begin():
        c = await staff_store.get_customer(db, name)
        c.language = language
    await s.audit.record(
        actor=ctx.principal.name,
        action="customer.change",
        target=c.name,
        source=ctx.source,
        details={"language": language},
    )
    return customer_out(c)
