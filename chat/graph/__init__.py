"""The conversation graph: ``recall → pre_process → route → generate → post_process →
remember``, checkpointed in PostgreSQL (thread id = conversation id). Run a turn with
``chat.graph.service.astream_turn`` / ``arun_turn``."""
