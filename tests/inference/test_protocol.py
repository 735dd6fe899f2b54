"""The worker protocol's request on the broker: sealed, so a broker that keeps its
messages on disk (Redis's append-only file) never holds a prompt in clear."""

from __future__ import annotations

import json

from inference.engines.base import ChatRequest
from inference.protocol import request_from_dict, request_to_dict

CANARY = "canary-protocol-7f3a"


def test_a_request_travels_sealed_and_comes_back_whole():
    request = ChatRequest(messages=[{"role": "user", "content": f"say {CANARY}"}],
                          max_tokens=7, temperature=0.5, top_p=0.9, stop=["x"], seed=3,
                          extra={"tools": [{"type": "function",
                                            "function": {"name": CANARY}}]},
                          request_id="req-1")

    sent = request_to_dict(request)

    assert CANARY not in json.dumps(sent)
    assert sent["request_id"] == "req-1"
    assert request_from_dict(sent) == request
