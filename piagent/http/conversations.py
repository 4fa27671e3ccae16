"""The conversation endpoints: list, read and delete the caller's stored conversations."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from piagent.exceptions import ConversationNotFound, ValidationFailed, clip
from piagent.http.openapi import JSON, Body, Endpoint, Param
from piagent.http.requests import get_runtime, owner_of
from piagent.http.responses import JSONResponse
from piagent.schemas import ConversationId
from piagent.stores.base import Conversation, ConversationSummary, Cursor


class ConversationList(msgspec.Struct):
    """`GET /conversations`: a page, newest first; `next` is the cursor for the following page, or null."""

    conversations: list[ConversationSummary]
    next: str | None


DEFAULT_PAGE = 20
MAX_PAGE = 100
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CURSOR = msgspec.json.Decoder(tuple[Annotated[float, msgspec.Meta(ge=0)], ConversationId])


def encode_cursor(cursor: Cursor) -> str:
    """An opaque, URL-safe `next`: the (updated_at, id) of the last conversation on the page."""
    return base64.urlsafe_b64encode(msgspec.json.encode(cursor)).rstrip(b"=").decode()


def decode_cursor(text: str) -> Cursor:
    """The cursor a `next` stands for; a 422 naming `before` when it is not one piagent made."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        updated_at, conversation_id = _CURSOR.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise ValidationFailed("`before` is not a cursor from a previous page's `next`", "before") from exc
    return updated_at, conversation_id


def _page_size(text: str | None) -> int:
    if text is None:
        return DEFAULT_PAGE
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise ValidationFailed(f"`limit` must be an integer from 1 to {MAX_PAGE}, got {clip(text)}", "limit")
    return int(text)


def _not_found(conversation_id: str) -> ConversationNotFound:
    return ConversationNotFound(f"no conversation {clip(conversation_id)}")


async def list_conversations(request: Request) -> Response:
    """`GET /conversations?limit=20&before=<cursor>`: the caller's conversations, newest first."""
    runtime = get_runtime(request)
    limit = _page_size(request.query_params.get("limit"))
    before_text = request.query_params.get("before")
    before = decode_cursor(before_text) if before_text else None
    if runtime.store is None:
        return JSONResponse(ConversationList([], None))
    # One more than asked: whether it comes back says if there is a next page, without an empty last one.
    found = await runtime.store.list_conversations(owner_of(request), limit + 1, before)
    page = found[:limit]
    following = encode_cursor((page[-1].updated_at, page[-1].id)) if len(found) > limit else None
    return JSONResponse(ConversationList(page, following))


async def conversation(request: Request) -> Response:
    """`/conversations/{id}`: GET reads it, DELETE forgets it (one route, so a 405 lists both methods)."""
    if request.method == "DELETE":
        return await delete_conversation(request)
    return await get_conversation(request)


async def get_conversation(request: Request) -> Response:
    """`GET /conversations/{id}`: every kept turn with its role, text, time and interrupted flag."""
    runtime = get_runtime(request)
    conversation_id: str = request.path_params["conversation_id"]
    found = None
    if runtime.store is not None and _ID.fullmatch(conversation_id):
        found = await runtime.store.get(conversation_id, owner_of(request))
    if found is None:
        raise _not_found(conversation_id)
    return JSONResponse(found)


async def delete_conversation(request: Request) -> Response:
    """`DELETE /conversations/{id}`: 204, and from then on 404."""
    runtime = get_runtime(request)
    conversation_id: str = request.path_params["conversation_id"]
    deleted = (
        runtime.store is not None
        and _ID.fullmatch(conversation_id) is not None
        and await runtime.store.delete(conversation_id, owner_of(request))
    )
    if not deleted:
        raise _not_found(conversation_id)
    return Response(status_code=204)


def routes() -> list[Route]:
    """The conversation endpoints, for `build_routes`."""
    return [
        Route("/conversations", list_conversations, methods=["GET"]),
        Route("/conversations/{conversation_id}", conversation, methods=["GET", "DELETE"]),
    ]


# What /openapi.json says about this door's routes.
API: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/conversations",
        "The caller's stored conversations, newest first, a page at a time",
        query=(Param("limit", "conversations per page, 1 to 100 (default 20)"), Param("before", "a page's `next`")),
        ok=(Body(JSON, ConversationList),),
        errors=(422, 503),
    ),
    Endpoint(
        "GET",
        "/conversations/{conversation_id}",
        "One stored conversation with every kept turn",
        path_params=(Param("conversation_id", "the conversation's id"),),
        ok=(Body(JSON, Conversation),),
        errors=(404, 503),
    ),
    Endpoint(
        "DELETE",
        "/conversations/{conversation_id}",
        "Forget one stored conversation",
        path_params=(Param("conversation_id", "the conversation's id"),),
        status=204,
        errors=(404, 503),
    ),
)
