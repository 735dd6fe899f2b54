"""The studio's websocket: ``/ws/chat/<conversation>/`` (``new`` for a new one).

A thin adapter between the JSON protocol (docs/websocket.md) and the conversation
graph's ``astream_turn``: it authenticates (session, or an API key in the handshake's
``Authorization`` header), checks each frame (size, rate, shape), admits each turn
(``routing.admission``: a key's validity, network, scope and limits, or a signed-in
user's quota — refused with the codes ``/v1`` uses), runs one turn at a time as a task
it can cancel, relays the turn's events, each stamped with the request's ``id``, and
settles the turn's tokens when it ends (a ``quota`` frame says what is left). Every
socket on a conversation — on any web replica — sees its frames through the channel
layer group ``chat.<conversation>``; a ``stop`` reaches the replica running the turn
the same way (``chat.ws_group``). A ``continue`` runs a branch that the editor
replayed from one of a run's steps on from there (``chat.workflows.steps``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import translation
from django.utils.translation import gettext as _

from core.client_ip import client_ip
from core.i18n import language_for_scope
from core.metrics import websocket_closed, websocket_opened
from routing.admission import Ticket, admit, authenticate
from routing.keys import KeyRefused
from routing.rules import estimate_tokens

from . import studio
from .conversations import ConversationError, check_content, key_identity
from .editor_api import CHANGE, may
from .graph.service import astream_resume, astream_turn
from .workflows.compiler import WorkflowError, aresolve
from .workflows.steps import astream_continue
from .ws_frames import (
    FrameError,
    TokenBucket,
    TurnRelay,
    check_text,
    decision_of,
    model_of,
    params_of,
    request_id_of,
    trace_of,
    turn_of,
    version_of,
)
from .ws_group import ConversationGroup

logger = logging.getLogger(__name__)

CONSUMER = "chat"
# Runs left to finish after their socket closed (OPENCLAW_WS_CANCEL_ON_DISCONNECT off).
_detached: set[asyncio.Task] = set()


class ChatConsumer(ConversationGroup):
    """One studio connection to one conversation (see the module's docstring)."""

    identity: str | None = None
    account: Any = None  # the signed-in user (their quota), or None for an API key
    secret: str | None = None  # the API key presented, admitted again on every turn
    client_addr = ""  # the client's address behind trusted proxies (the key's networks)
    run: asyncio.Task | None = None
    run_id: str | None = None
    turn_open = False  # until the turn's last frame is sent (its task may still close)

    # --- connection ---------------------------------------------------------------

    async def connect(self) -> None:
        await self.accept()
        self.open = True
        # Frames' messages in the page's language (?lang= remembered, saved, Accept-Language).
        translation.activate(await database_sync_to_async(language_for_scope)(self.scope))
        self.bucket = TokenBucket(settings.OPENCLAW_WS_RATE, settings.OPENCLAW_WS_BURST)
        try:
            self.identity = await self._identity()
        except KeyRefused as exc:  # unknown, expired, revoked, or from a network it may not
            await self._refuse(4403 if exc.status == 403 else 4401, exc.code, exc.message,
                               exc.status)
            return
        if self.identity is None:
            await self._refuse(4401, "unauthorized", _("Sign in, or send an API key as "
                                                       "“Authorization: Bearer <key>”."))
            return
        wanted = self.scope["url_route"]["kwargs"]["conversation"]
        if wanted != "new":
            try:
                past = await database_sync_to_async(studio.history)(wanted, self.identity)
            except ConversationError as exc:
                await self._refuse(4404, exc.code, exc.message, 404)
                return
            await self._join(past["id"])
            await self.send_json({"type": "history", **past, "id": None,
                                  "conversation": past["id"], "running": None})
        websocket_opened(CONSUMER)
        self.counted = True

    async def _identity(self) -> str | None:
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            self.account = user
            return user.get_username()
        headers = self.scope.get("headers", [])
        found = dict(headers)
        scheme, _sep, secret = found.get(b"authorization", b"").decode(
            "latin-1").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return None
        forwarded = ",".join(v.decode("latin-1") for k, v in headers
                             if k == b"x-forwarded-for") or None
        self.secret = secret.strip()
        self.client_addr = client_ip((self.scope.get("client") or ("", 0))[0], forwarded)
        return await database_sync_to_async(_key_identity)(self.secret, self.client_addr)

    async def _refuse(self, code: int, error: str, message: str, status: int = 401) -> None:
        await self.send_json({"type": "error", "id": None, "code": error, "message": message,
                              "status": status})
        await self.close(code=code)
        self.open = False

    async def disconnect(self, code: int) -> None:
        self.open = False
        if getattr(self, "counted", False):
            websocket_closed(CONSUMER)
            self.counted = False
        if self.run is not None and not self.run.done():
            if settings.OPENCLAW_WS_CANCEL_ON_DISCONNECT:
                self.run.cancel()
            else:
                _detached.add(self.run)
                self.run.add_done_callback(_detached.discard)
        await self._leave()

    # --- frames in ----------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        """Check one frame and dispatch it; whatever goes wrong becomes an ``error``
        frame and the connection stays usable."""
        request_id = None
        try:
            frame = self._parse(text_data, bytes_data)
            request_id = request_id_of(frame)
            check_text(frame)
            kind = frame.get("type")
            handler = self._handlers().get(kind) if isinstance(kind, str) else None
            if handler is None:
                raise FrameError("unknown_type", _(
                    "Unknown frame type; expected one of: %(types)s.")
                    % {"types": ", ".join(sorted(self._handlers()))})
            await handler(frame, request_id)
        except FrameError as exc:
            await self._error(request_id, exc.code, exc.message, exc.param)
        except ConversationError as exc:
            await self._error(request_id, exc.code, exc.message)
        except KeyRefused as exc:
            await self._refused(request_id, exc)
        except Exception:
            logger.exception("studio frame failed")
            await self._error(request_id, "internal_error",
                              _("The frame could not be handled; try again."))

    def _parse(self, text_data: str | None, bytes_data: bytes | None) -> dict[str, Any]:
        if not self.bucket.take():
            raise FrameError("rate_limited", _("Too many frames; slow down."))
        if self.identity is None:
            raise FrameError("unauthorized", _("This connection is not signed in."))
        if text_data is None:
            raise FrameError("binary_frame", _("Frames must be JSON text, not binary."))
        limit = settings.OPENCLAW_WS_MAX_FRAME
        if len(text_data) > limit or len(text_data.encode("utf-8", "replace")) > limit:
            raise FrameError("frame_too_large", _("A frame may be at most %(n)d bytes.")
                             % {"n": limit})
        try:
            frame = json.loads(text_data)
        except (ValueError, RecursionError):
            raise FrameError("invalid_json", _("The frame is not valid JSON.")) from None
        if not isinstance(frame, dict):
            raise FrameError("invalid_frame", _("A frame must be a JSON object with a "
                                                "“type”."))
        return frame

    def _handlers(self) -> dict[str, Callable[[dict, str | None], Awaitable[None]]]:
        return {"message": self.on_message, "stop": self.on_stop,
                "regenerate": self.on_regenerate, "fork": self.on_fork,
                "approve": self.on_decision, "reject": self.on_decision,
                "history": self.on_history, "ping": self.on_ping,
                "continue": self.on_continue}

    async def on_ping(self, frame: dict, request_id: str | None) -> None:
        await self.send_json({"type": "pong", "id": request_id, "time": time.time()})

    async def on_history(self, frame: dict, request_id: str | None) -> None:
        conversation = self._require_conversation()
        past = await database_sync_to_async(studio.history)(conversation, self.identity)
        await self.send_json({"type": "history", **past, "id": request_id,
                              "conversation": past["id"],
                              "running": self.run_id if self._running() else None})

    async def on_message(self, frame: dict, request_id: str | None) -> None:
        self._require_idle()
        content = check_content(frame.get("content"))
        model, workflow, params, tools = turn_of(frame)
        durability, version = trace_of(frame), version_of(frame, workflow)
        if version is not None and not (self.account is not None and await
                                        database_sync_to_async(may)(self.account, CHANGE)):
            raise FrameError("version_forbidden", _(
                "Only a signed-in user who may change workflows can run one of their saved "
                "versions."), "version")
        ticket = await self._admit(content, params, model=model, workflow=workflow)
        await self._start(request_id, lambda: astream_turn(
            conversation_id=self.conversation_id, user=self.user, content=content,
            model=model, params=params, workflow=workflow, tools=tools, batched=True,
            durability=durability, version=version), ticket)

    async def on_regenerate(self, frame: dict, request_id: str | None) -> None:
        self._require_idle()
        conversation = self._require_conversation()
        model = model_of(frame, required=False)
        params = params_of(frame)
        if model is None:
            past = await database_sync_to_async(studio.conversation_of)(
                conversation, self.identity)
            model = past.model
        # Admitted before the question leaves the context (its tokens settle at the end).
        ticket = await self._admit(None, params, model=model)
        source = await database_sync_to_async(studio.regenerate_source)(
            conversation, self.identity)
        await self._emit({"type": "regenerate", "id": request_id,
                          "conversation": conversation, "turn": source["turn"]})
        await self._start(request_id, lambda: astream_turn(
            conversation_id=conversation, user=self.user, content=source["content"],
            model=model, params=params, batched=True), ticket)

    async def on_fork(self, frame: dict, request_id: str | None) -> None:
        conversation = self._require_conversation()
        fork = await database_sync_to_async(studio.fork_conversation)(
            conversation, self.identity, frame.get("message_id"))
        await self.send_json({"type": "forked", "id": request_id,
                              "conversation": conversation, "fork": fork})

    async def on_stop(self, frame: dict, request_id: str | None) -> None:
        """Stop the conversation's turn: this socket's, or (through the group) one that
        another socket started, on any replica. ``stopping`` acknowledges; the turn's
        own ``done`` (``stopped``) follows if one was running."""
        if self._running():
            self._stop_here()
        elif self.conversation_id and self.channel_layer is not None:
            await self._ask_to_stop()
        else:
            raise FrameError("not_running", _("Nothing is being generated."))
        await self.send_json({"type": "stopping", "id": request_id,
                              "conversation": self.conversation_id})

    async def on_decision(self, frame: dict, request_id: str | None) -> None:
        """Resume a run waiting at a human-approval node: ``approve`` (with ``content``:
        approve an edited value) or ``reject`` (optional ``reason``)."""
        self._require_idle()
        conversation = self._require_conversation()
        resume, durability = decision_of(frame), trace_of(frame)
        ticket = await self._admit(resume.get("content"), {})
        await self._start(request_id, lambda: astream_resume(
            conversation_id=conversation, user=self.user, resume=resume, batched=True,
            durability=durability), ticket)

    async def on_continue(self, frame: dict, request_id: str | None) -> None:
        """Run a branch replayed from one of a run's steps on from that step (its
        pending nodes), streaming like a turn; ``nothing_to_continue`` when none is."""
        self._require_idle()
        conversation = self._require_conversation()
        ticket = await self._admit(None, {})
        await self._start(request_id, lambda: astream_continue(
            conversation_id=conversation, user=self.user, batched=True), ticket)

    @property
    def user(self) -> str:
        """The connection's identity: frames are handled only once it has one (``_parse``)."""
        assert self.identity is not None
        return self.identity

    def _stop_here(self) -> None:
        if self._running():
            assert self.run is not None  # _running() checked it
            self.run.cancel()

    def _running(self) -> bool:
        return self.turn_open and self.run is not None and not self.run.done()

    def _require_idle(self) -> None:
        if self._running():
            raise FrameError("busy", _("A reply is still being generated; stop it or wait."))

    def _require_conversation(self) -> str:
        if not self.conversation_id:
            raise FrameError("no_conversation", _("This conversation has no messages yet."))
        return self.conversation_id

    # --- a turn -------------------------------------------------------------------

    async def _admit(self, content: Any, params: dict[str, Any], *, model: str | None = None,
                     workflow: str | None = None) -> Ticket:
        """Admit one turn (``KeyRefused`` refuses it): the signed-in user's quota, or the
        API key's validity, network, scope and limits — a workflow turn may use the
        workflow's own model without the key listing it."""
        tokens = estimate_tokens([{"role": "user", "content": content}]) if content else 0
        most = params.get("max_tokens")
        reserve = most if isinstance(most, int) and not isinstance(most, bool) \
            and most > 0 else 0
        if self.account is not None:
            return await admit(user=self.account, tokens=tokens, reserve=reserve)
        own_model = None
        if workflow is not None:
            with contextlib.suppress(WorkflowError):  # unknown: the turn reports it
                plan = await aresolve(workflow)
                own_model = plan.default_model if plan is not None else None
        return await admit(secret=self.secret, client_addr=self.client_addr, model=model,
                           workflow=workflow, own_model=own_model, tokens=tokens,
                           reserve=reserve)

    async def _refused(self, request_id: str | None, exc: KeyRefused) -> None:
        """A turn admission refused: an ``error`` frame with ``/v1``'s status and code,
        when to retry and (a spent quota) its state."""
        if self.open:
            await self.send_json({"type": "error", "id": request_id, "code": exc.code,
                                  "message": exc.message, "status": exc.status,
                                  "retry_after": exc.retry_after, "quota": exc.quota,
                                  "conversation": self.conversation_id})

    async def _start(self, request_id: str | None,
                     events: Callable[[], AsyncGenerator[dict, None]], ticket: Ticket) -> None:
        request_id = request_id or uuid.uuid4().hex[:12]  # a turn's frames always carry one
        self.run_id, self.turn_open = request_id, True
        self.run = asyncio.create_task(self._turn(request_id, events, ticket))

    async def _turn(self, request_id: str,
                    events: Callable[[], AsyncGenerator[dict, None]], ticket: Ticket) -> None:
        """Relay one turn's events; a cancel (stop, disconnect) ends it with ``done``
        marked ``stopped`` and the text streamed so far, which is kept as the answer.
        Each model call's usage settles the turn's admission as it is reported (before
        the turn's last frame, so the next turn is admitted by what this one used)."""
        relay = TurnRelay(request_id, self.conversation_id)
        used: list[int] = []
        try:
            async with contextlib.aclosing(events()) as stream:
                async for event in stream:
                    if event["type"] == "token":  # most of a turn's events: the short way
                        await self._token(relay, event.get("text", ""))
                        continue
                    if event["type"] == "usage":
                        used.append(int(event.get("total_tokens") or 0))
                        await ticket.asettle(used[-1])
                    if event["type"] == "conversation" and self.conversation_id is None:
                        await self._join(event["id"])
                    if event["type"] in ("done", "error", "waiting"):
                        self.turn_open, relay.finished = False, True  # the next may come now
                    # A refusal before the turn began concerns only its sender.
                    await self._relay(relay, relay.frame(event), broadcast=relay.begun)
        except asyncio.CancelledError:
            if relay.finished:  # cancelled while the finished turn's stream was closing
                return
            self.turn_open = False
            await self._flush(relay)
            stopped = relay.stopped()
            if relay.text and not relay.storing and self.conversation_id:
                stopped["message_id"] = await database_sync_to_async(
                    studio.keep_stopped_answer)(self.conversation_id, stopped["content"],
                                                relay.model or "")
            await self._emit(stopped, broadcast=relay.begun)
        except Exception:
            logger.exception("studio turn %s failed", request_id)
            self.turn_open = False
            with contextlib.suppress(Exception):
                await self._flush(relay)
            await self._emit(relay.frame({"type": "error", "code": "internal_error",
                                          "message": _("The turn failed; try again.")}))
        finally:
            await self._settled(request_id, relay, ticket, bool(used))

    async def _settled(self, request_id: str, relay: TurnRelay, ticket: Ticket,
                       reported: bool) -> None:
        """Settle a turn no model call reported usage for (stopped, failed: its prompt
        and what was streamed, else nothing), then tell the socket its quota's state."""
        try:
            if not reported:
                text = "".join(relay.text)
                await ticket.asettle(ticket.counted.need + estimate_tokens(
                    [{"role": "assistant", "content": text}]) if text else 0)
            quota = ticket.quota()
            if quota is not None:  # to this socket only, if it is still open
                await self._emit({"type": "quota", "id": request_id, "quota": quota}, False)
        except Exception:  # the turn is over; its count is the worst that is off
            logger.exception("settling studio turn %s failed", request_id)

    async def _relay(self, relay: TurnRelay, frame: dict[str, Any], broadcast: bool) -> None:
        """Send a turn's frame, unless it is held for the answer's first token
        (``TurnRelay.hold``): after what was held."""
        if relay.hold(frame, broadcast, self._flush_soon):
            return
        if relay.busy():
            await self._flush(relay)
        await self._emit(frame, broadcast)

    async def _token(self, relay: TurnRelay, text: str) -> None:
        """Send a ``token`` event: one frame for the tokens that queued up while the socket
        was busy (the graph service merges them, ``batched``), so a loaded process sends
        fewer, larger frames and an idle one sends each token as it comes. The answer's
        first token goes out at once, ahead of the bookkeeping frames held for it."""
        data, first = relay.token(text), not relay.answering
        relay.answering = True
        if self.open:
            await self._send_text(data)
        if relay.begun and self.watched:
            await self._broadcast(relay.token_frame(text))
        if first:
            await self._flush(relay)  # what was held for it follows it

    def _flush_soon(self, relay: TurnRelay) -> None:
        relay.timer = None
        relay.flushing = asyncio.ensure_future(self._flush(relay))

    async def _flush(self, relay: TurnRelay) -> None:
        """Send the held frames, in order (after a flush the timer started, if any)."""
        held = relay.release()
        if relay.flushing is not None and relay.flushing is not asyncio.current_task():
            await relay.flushing  # it sends what was held when it began
        for frame, broadcast in held:
            await self._emit(frame, broadcast)

    async def _emit(self, frame: dict[str, Any], broadcast: bool = True) -> None:
        """To this socket, then (``broadcast``) to the conversation's other sockets."""
        if self.open:
            await self._send_text(await self.encode_json(frame))
        if broadcast and self.watched:
            await self._broadcast(frame)

    async def _error(self, request_id: str | None, code: str, message: str,
                     param: str | None = None) -> None:
        if self.open:
            frame = {"type": "error", "id": request_id, "code": code, "message": message,
                     "conversation": self.conversation_id}
            if param is not None:
                frame["param"] = param  # the field at fault
            await self.send_json(frame)

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return json.dumps(content, ensure_ascii=False, default=str)


def _key_identity(secret: str, client_addr: str) -> str:
    """The identity of the key presented, valid from this address, or ``KeyRefused``."""
    return key_identity(authenticate(secret, client_addr))
