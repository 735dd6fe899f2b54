"""The studio websocket's conversation group (docs/websocket.md): every socket on a
conversation, on any web replica, joins the channel-layer group ``chat.<conversation>``;
a socket that learns it is not alone (``studio.hello`` / ``studio.present``) fans its
turn's frames out to the others (``studio.frame``), and a ``stop`` reaches the replica
running the turn (``studio.stop``). ``chat.consumers.ChatConsumer`` mixes this in."""

from __future__ import annotations

import contextlib
from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncJsonWebsocketConsumer


def group_name(conversation_id: str) -> str:
    return f"chat.{conversation_id}"


class ConversationGroup(AsyncJsonWebsocketConsumer):
    """A consumer's membership of its conversation's group (see the module's docstring)."""

    conversation_id: str | None = None
    open = False
    watched = False  # another socket shares the conversation: frames are fanned out

    async def _join(self, conversation_id: str) -> None:
        """Join the conversation's group and say so: sockets already there fan their
        frames out from now on and answer ``present``, so this one does too. A socket
        alone on its conversation (the usual case) sends through no channel layer."""
        self.conversation_id = conversation_id
        if self.channel_layer is not None:
            group = group_name(conversation_id)
            await self.channel_layer.group_add(group, self.channel_name)
            await self.channel_layer.group_send(group, {"type": "studio.hello",
                                                        "origin": self.channel_name})

    async def _leave(self) -> None:
        if self.conversation_id and self.channel_layer is not None:
            await self.channel_layer.group_discard(group_name(self.conversation_id),
                                                   self.channel_name)

    async def _ask_to_stop(self) -> None:
        """Ask the conversation's other sockets to stop the turn one of them runs."""
        assert self.conversation_id is not None and self.channel_layer is not None
        await self.channel_layer.group_send(group_name(self.conversation_id), {
            "type": "studio.stop", "origin": self.channel_name})

    async def _broadcast(self, frame: dict[str, Any]) -> None:
        """To the conversation's other sockets, on any replica."""
        if self.channel_layer is None or self.conversation_id is None:
            return
        with contextlib.suppress(Exception):
            await self.channel_layer.group_send(group_name(self.conversation_id), {
                "type": "studio.frame", "frame": frame, "origin": self.channel_name})

    async def _send_text(self, text: str) -> None:
        """One text frame to this socket, unless it has closed (even under us)."""
        with contextlib.suppress(Exception):  # the socket closed under us
            await self.base_send({"type": "websocket.send", "text": text})

    def _stop_here(self) -> None:
        """Cancel this socket's running turn, if any (the consumer's)."""
        raise NotImplementedError

    # --- channel layer events -----------------------------------------------------

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels closes the thread's stale database connections before each handler
        (a hop to the ORM's thread); the group's events touch no database, and a
        watched turn sends one for each of its frames, so they skip it."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is not None and message["type"].startswith("studio."):
            await handler(message)
        else:
            await super().dispatch(message)

    async def studio_frame(self, event: dict[str, Any]) -> None:
        if event.get("origin") != self.channel_name and self.open:
            await self._send_text(await self.encode_json(event["frame"]))

    async def studio_hello(self, event: dict[str, Any]) -> None:
        if event.get("origin") != self.channel_name:
            self.watched = True
            await self.channel_layer.send(event["origin"], {"type": "studio.present"})

    async def studio_present(self, event: dict[str, Any]) -> None:
        self.watched = True

    async def studio_stop(self, event: dict[str, Any]) -> None:
        self._stop_here()
