"""Catalogue models and the products users own."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select

from ..db import Database
from ..errors import InvalidInput, NotFound
from ..models import OwnedProduct, ProductModel
from .pagination import Page, keyset_page


def create_model(database: Database, *, kind: str, brand: str, name: str, attributes: dict[str, Any]) -> ProductModel:
    """Add a model to the catalogue (operator)."""
    with database.unit_of_work() as uow:
        assert uow.session is not None
        model = ProductModel(kind=kind, brand=brand, name=name, attributes=attributes)
        uow.session.add(model)
        uow.commit()
    return model


def list_models(
    database: Database, *, kind: str | None, limit: int, cursor: uuid.UUID | None
) -> Page[ProductModel]:
    """Catalogue models, optionally of one kind."""
    query = select(ProductModel)
    if kind is not None:
        query = query.where(ProductModel.kind == kind)
    with database.session() as session:
        return keyset_page(session, query, ProductModel.id, limit=limit, after=cursor)


def get_model(database: Database, model_id: uuid.UUID) -> ProductModel:
    """One catalogue model, or 404."""
    with database.session() as session:
        model = session.get(ProductModel, model_id)
    if model is None:
        raise NotFound(f"catalogue model {model_id} does not exist")
    return model


def add_owned_product(
    database: Database, user_id: uuid.UUID, *, model_id: uuid.UUID, nickname: str | None, max_products: int
) -> tuple[OwnedProduct, ProductModel]:
    """Record that the user owns a product of ``model_id``."""
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        model = session.get(ProductModel, model_id)
        if model is None:
            raise InvalidInput("model_id", f"catalogue model {model_id} does not exist")
        count = session.scalar(
            select(func.count()).select_from(OwnedProduct).where(OwnedProduct.user_id == user_id)
        )
        if count is not None and count >= max_products:
            raise InvalidInput("model_id", f"at most {max_products} products per user")
        product = OwnedProduct(user_id=user_id, model_id=model_id, nickname=nickname)
        session.add(product)
        uow.commit()
    return product, model


def list_owned_products(
    database: Database, user_id: uuid.UUID, *, limit: int, cursor: uuid.UUID | None
) -> Page[tuple[OwnedProduct, ProductModel]]:
    """The user's products with their catalogue models."""
    with database.session() as session:
        page = keyset_page(
            session, select(OwnedProduct).where(OwnedProduct.user_id == user_id), OwnedProduct.id,
            limit=limit, after=cursor,
        )
        model_ids = {p.model_id for p in page.items}
        models = {m.id: m for m in session.scalars(select(ProductModel).where(ProductModel.id.in_(model_ids)))}
    return Page(items=[(p, models[p.model_id]) for p in page.items], next_after=page.next_after)


def get_owned_product(
    database: Database, user_id: uuid.UUID, product_id: uuid.UUID
) -> tuple[OwnedProduct, ProductModel]:
    """One of the user's products; someone else's is 404."""
    with database.session() as session:
        product = session.scalar(
            select(OwnedProduct).where(OwnedProduct.id == product_id, OwnedProduct.user_id == user_id)
        )
        if product is None:
            raise NotFound(f"product {product_id} does not exist")
        model = session.get(ProductModel, product.model_id)
    assert model is not None
    return product, model


def delete_owned_product(database: Database, user_id: uuid.UUID, product_id: uuid.UUID) -> None:
    """Remove one of the user's products and its telemetry."""
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        product = session.scalar(
            select(OwnedProduct).where(OwnedProduct.id == product_id, OwnedProduct.user_id == user_id)
        )
        if product is None:
            raise NotFound(f"product {product_id} does not exist")
        session.delete(product)
        uow.commit()
