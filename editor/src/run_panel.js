// The editor's run panel: chat with the version open on the canvas (a draft included),
// beside the canvas. Interface used by main.js (editor_app.js):
//
//   h(RunPanel, {
//     slug,              // the workflow's slug
//     config,            // the page config (urls, csrf, language, ws url, default model…)
//     version,           // the number of the saved version open on the canvas, or null
//     live,              // the workflow's published version (its number), or null
//     published,         // whether the version open on the canvas was ever published
//     dirty,             // the canvas has changes not saved as a version
//     selectedNode,      // node id clicked on the canvas, or null
//     onNodeStatus,      // (statuses) => void; statuses: {nodeId: {status: "running" |
//                        //   "done" | "waiting" | "error", ms, tools: [{name, status}]}}
//   })
//
// A message goes over the studio websocket (docs/websocket.md) with "trace": true, so
// the run checkpoints after every node, and "version": the canvas's version runs, a draft
// too (users who may change workflows; others run the published one). Approvals and
// branches go on at the version their run started on (the server keeps it). Its `node`,
// `tool_call`, `tool_result` and `waiting` frames light the canvas up. After each turn the steps API lists the run's
// steps: click one (or a node on the canvas) to see its input and output state; "Fork
// from here" replays a branch from that step and sends `continue` on it. Past runs of
// the workflow can be opened from the picker.
import { createElement as h, useCallback, useEffect, useRef, useState } from "react";
import { getJSON, postJSON, url } from "./api.js";
import { interpolate, t } from "./i18n.js";
import { JsonView } from "./run_json.js";
import "./run_panel.css";

// An agent node runs as several graph nodes ("<id>__review", "<id>__tools").
export function canvasNode(name) {
  return typeof name === "string" ? name.replace(/__(review|tools)$/, "") : name;
}

function socketUrl(config, conversation) {
  const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
  return scheme + window.location.host + (config.ws || "/ws/chat/") + (conversation || "new") + "/";
}

let serial = 0;
const nextId = (prefix) => prefix + (++serial).toString(36) + Date.now().toString(36).slice(-4);

// Statuses a run's steps imply, for a run opened from the picker: the nodes of its last
// turn done, each with the time between its checkpoint and the one before.
function statusesOf(steps) {
  const statuses = {};
  if (!steps.length) return statuses;
  const turn = steps[steps.length - 1].turn;
  let before = null;
  steps.forEach((step) => {
    if (step.turn === turn && step.node) {
      const ms = before ? Date.parse(step.created_at) - Date.parse(before.created_at) : null;
      statuses[canvasNode(step.node)] = { status: "done", ms: Number.isFinite(ms) ? ms : null, tools: [] };
    }
    before = step;
  });
  const last = steps[steps.length - 1];
  if (last.interrupts && last.interrupts.length) {
    last.next.forEach((name) => { statuses[canvasNode(name)] = { status: "waiting", tools: [] }; });
  }
  return statuses;
}

function draftOf(value) {
  if (typeof value.reply === "string") return value.reply;
  return typeof value.message === "string" ? value.message : "";
}

// A run waiting for a person: a workflow's approval node (its prompt and the draft), or
// an agent's tool calls; Approve / Edit / Reject, spent once one is used. As in the
// studio's approval card, the resumed run's answer then takes the draft's place.
// props: entry ({approval, used, text, done}), disabled, onDecide(frame, which)
function ApprovalCard(props) {
  const entry = props.entry;
  const value = entry.approval && typeof entry.approval === "object" ? entry.approval : { prompt: String(entry.approval || "") };
  const calls = value.kind === "tool_approval" ? value.tool_calls || [] : null;
  const original = calls
    ? JSON.stringify(calls.length === 1 ? calls[0].arguments : Object.fromEntries(calls.map((c) => [c.id, c.arguments])), null, 2)
    : draftOf(value);
  const [editing, setEditing] = useState(false);
  const [text, setText] = useState(original);
  const [invalid, setInvalid] = useState(false);
  const used = entry.used || null;
  const spent = used !== null || props.disabled;
  const decide = (frame, which) => props.onDecide(frame, which);
  const approveEdited = () => {
    if (!text.trim()) { setInvalid(true); return; }
    if (calls) {
      try { JSON.parse(text); } catch (failure) { setInvalid(true); return; }
    }
    decide({ type: "approve", content: text }, "edit");
  };
  const reject = () => {
    const reason = window.prompt(t("Why is this rejected? (optional)"), "");
    if (reason === null) return;
    decide({ type: "reject", reason: reason }, "reject");
  };
  const button = (which, label, onClick, hidden) => hidden ? null : h("button", {
    type: "button", className: which + (used === which ? " chosen" : ""), disabled: spent, onClick: onClick,
  }, label);
  const answered = used !== null && (entry.done || entry.text);
  return h("div", { className: "run-msg assistant run-approval" + (entry.done ? " done" : ""), role: "group", "aria-label": t("Waiting for approval") },
    h("span", { className: "run-role" }, t("Workflow")),
    h("p", { className: "approval-prompt" }, value.prompt || (calls ? t("Approve these tool calls?") : t("Approve this answer?"))),
    calls ? h("ul", { className: "approval-calls" }, calls.map((call) => h("li", { key: call.id },
      h("strong", null, call.name), " ", h("code", null, JSON.stringify(call.arguments))))) : null,
    answered ? h("div", { className: "run-text" }, entry.text) : editing
      ? h("textarea", {
        className: "approval-edit" + (invalid ? " invalid" : ""), value: text, disabled: spent, rows: 5,
        "aria-label": calls ? t("The corrected arguments (JSON)") : t("The corrected answer"),
        onChange: (event) => { setText(event.target.value); setInvalid(false); },
      })
      : calls ? null : h("div", { className: "approval-draft" }, original),
    h("div", { className: "approval-actions" },
      button("approve", "✓ " + t("Approve"), () => decide({ type: "approve" }, "approve"), editing),
      button("edit", "✎ " + t("Edit"), () => setEditing(true), editing),
      button("approve-edit", "✓ " + (calls ? t("Approve with these arguments") : t("Approve the edited answer")), approveEdited, !editing),
      button("reject", "✕ " + t("Reject"), reject, false)));
}

// One step in the list; the selected one shows its detail (props.children) below it.
function StepRow(props) {
  const step = props.step;
  const name = step.node ? step.node : step.source === "fork" ? t("branch start") : t("input");
  return h("li", null, h("button", {
    type: "button", className: "run-step" + (props.selected ? " selected" : ""), "aria-pressed": props.selected ? "true" : "false",
    "data-node": step.node || "", onClick: props.onSelect,
  },
  h("span", { className: "step-number" }, interpolate(t("step %(step)s"), { step: step.step }, true)),
  h("strong", { className: "step-node" }, name),
  step.interrupts && step.interrupts.length ? h("span", { className: "step-flag" }, t("waited")) : null,
  step.next.length ? h("span", { className: "step-next muted" }, "→ " + step.next.join(", ")) : null),
  props.children);
}

function StepDetail(props) {
  const step = props.step;
  const shown = useRef(null);
  useEffect(() => {
    if (shown.current && shown.current.scrollIntoView) shown.current.scrollIntoView({ block: "nearest" });
  }, [step.checkpoint_id]);
  return h("div", { className: "run-step-detail", ref: shown, "aria-live": "polite" },
    h("div", { className: "step-detail-head" },
      h("strong", null, step.node || (step.source === "fork" ? t("branch start") : t("input"))),
      step.workflow_version ? h("span", { className: "muted" }, interpolate(t("version %(number)s"), { number: step.workflow_version }, true)) : null,
      h("button", { type: "button", className: "fork", disabled: props.busy, onClick: props.onFork,
        title: t("Replay the run from this step in a new branch") }, "↪ " + t("Fork from here"))),
    h("h4", null, t("Input state")),
    h(JsonView, { value: step.input, label: t("input"), className: "step-input", openDepth: 0 }),
    h("h4", null, t("Output")),
    Object.keys(step.output || {}).length
      ? h(JsonView, { value: step.output, label: t("output"), className: "step-output", openDepth: 4 })
      : h("p", { className: "muted" }, t("This step changed nothing.")));
}

export function RunPanel(props) {
  const { slug, config, selectedNode, onNodeStatus, live, dirty } = props;
  // The version a message runs: the canvas's, for those who may run drafts.
  const version = config.can_change && Number.isInteger(props.version) ? props.version : null;
  const target = version !== null ? version : Number.isInteger(live) ? live : null;
  const models = config.models || [];
  const [model, setModel] = useState(config.default_model || (models[0] && models[0].name) || "");
  const [draft, setDraft] = useState("");
  const [conversation, setConversation] = useState(null);
  const [messages, setMessages] = useState([]);
  const [running, setRunning] = useState(null);
  const [notice, setNotice] = useState(null);
  const [steps, setSteps] = useState([]);
  const [picked, setPicked] = useState(null);
  const [runs, setRuns] = useState([]);
  const socket = useRef(null);
  const statuses = useRef({});
  const current = useRef(null); // the conversation the socket is on
  const handlers = useRef(null);

  const report = useCallback((next) => {
    statuses.current = next;
    if (onNodeStatus) onNodeStatus(Object.assign({}, next));
  }, [onNodeStatus]);
  const setStatus = (name, change) => {
    const id = canvasNode(name);
    const before = statuses.current[id] || { tools: [] };
    report(Object.assign({}, statuses.current, { [id]: Object.assign({}, before, change(before)) }));
  };

  const loadRuns = useCallback(() => {
    getJSON(config, url(config, "workflow-runs", { slug: slug }))
      .then((body) => setRuns(body.runs || []))
      .catch(() => setRuns([]));
  }, [config, slug]);
  // The run's steps (after each turn): the one shown stays shown if it is still there.
  const loadSteps = useCallback((id) => {
    if (!id) return Promise.resolve([]);
    return getJSON(config, url(config, "steps", { id: id }))
      .then((body) => {
        const found = body.steps || [];
        if (current.current === id) {
          setSteps(found);
          setPicked((before) => (found.some((step) => step.checkpoint_id === before) ? before : null));
        }
        return found;
      })
      .catch((failure) => { setNotice({ kind: "error", text: failure.message }); return []; });
  }, [config]);

  useEffect(() => { loadRuns(); }, [loadRuns]);
  useEffect(() => () => { if (socket.current) socket.current.close(); }, []);

  // The canvas's selected node shows its latest step.
  useEffect(() => {
    if (!selectedNode) return;
    const found = steps.filter((step) => canvasNode(step.node) === selectedNode);
    if (found.length) setPicked(found[found.length - 1].checkpoint_id);
  }, [selectedNode, steps]);

  const ended = (id) => {
    setRunning(null);
    loadSteps(id);
    loadRuns();
  };

  // The entries of the chat: {key, role, text, run (the request streaming into it),
  // done, approval (an interrupt's value: a card), used (the decision taken)}.
  const streamInto = (run, change, make) => setMessages((list) => {
    let at = -1;
    list.forEach((entry, index) => { if (entry.role === "assistant" && entry.run === run) at = index; });
    if (at === -1) return make ? [...list, make()] : list;
    return [...list.slice(0, at), Object.assign({}, list[at], change(list[at])), ...list.slice(at + 1)];
  });
  const cards = (run, interrupts) => interrupts.map((stop, index) => ({
    key: "w" + run + ":" + index, role: "assistant", run: "w" + run, approval: stop.value, text: "",
  }));

  // Each frame of the socket (docs/websocket.md "Server → client").
  handlers.current = (frame) => {
    const id = frame.conversation || current.current;
    switch (frame.type) {
      case "history":
        setMessages([
          ...(frame.messages || []).map((m) => ({ key: "h" + m.id, role: m.role, done: true,
            text: typeof m.content === "string" ? m.content : JSON.stringify(m.content) })),
          ...(frame.waiting ? cards("h" + frame.waiting.run_id, frame.waiting.interrupts || []) : []),
        ]);
        break;
      case "conversation":
        if (frame.conversation && current.current !== frame.conversation) {
          current.current = frame.conversation;
          setConversation(frame.conversation);
        }
        break;
      case "node":
        if (frame.phase === "start") setStatus(frame.node, () => ({ status: "running" }));
        else setStatus(frame.node, (before) => ({ status: "done", ms: (before.status === "running" && before.ms ? before.ms : 0) + (frame.ms || 0) }));
        break;
      case "tool_call":
        setStatus(frame.node, (before) => ({ tools: [...(before.tools || []), { name: frame.name, call: frame.call_id, status: frame.approval ? "waiting" : "running" }] }));
        break;
      case "tool_result":
        setStatus(frame.node, (before) => ({ tools: (before.tools || []).map((tool) => tool.call === frame.call_id ? Object.assign({}, tool, { status: frame.status }) : tool) }));
        break;
      case "tool":
        setStatus(frame.node, (before) => ({ tools: [...(before.tools || []), { name: "http", status: String(frame.status) }] }));
        break;
      case "token":
        streamInto(frame.id, (entry) => ({ text: entry.text + frame.text }),
          () => ({ key: "a" + frame.id, role: "assistant", run: frame.id, text: frame.text }));
        break;
      case "waiting":
        (frame.interrupts || []).forEach((stop) => {
          const node = stop.value && stop.value.node;
          if (node) setStatus(node, () => ({ status: "waiting" }));
        });
        // The draft streamed so far becomes the card's (shown once).
        setMessages((list) => [...list.filter((m) => !(m.role === "assistant" && m.run === frame.id && !m.approval)),
          ...cards(frame.id, frame.interrupts || [])]);
        ended(id);
        break;
      case "done":
        streamInto(frame.id, () => ({ text: frame.content || "", done: true }),
          () => ({ key: "d" + frame.id, role: "assistant", run: frame.id, text: frame.content || "", done: true }));
        ended(id);
        break;
      case "error": {
        Object.keys(statuses.current).forEach((node) => {
          if (statuses.current[node].status === "running") setStatus(node, () => ({ status: "error" }));
        });
        setNotice({ kind: "error", text: frame.message || frame.code });
        if (running === null || frame.id === running) ended(id);
        break;
      }
      default:
        break;
    }
  };

  // Open the socket on a conversation (null: a new one), then send `first`.
  const connect = (id, first) => {
    if (socket.current) {
      socket.current.onclose = null;
      socket.current.close();
    }
    current.current = id;
    setConversation(id);
    const ws = new WebSocket(socketUrl(config, id));
    socket.current = ws;
    ws.onmessage = (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch (failure) { return; }
      if (socket.current === ws) handlers.current(frame);
    };
    ws.onopen = () => { if (first) ws.send(JSON.stringify(first)); };
    ws.onclose = () => {
      if (socket.current !== ws) return;
      socket.current = null;
      setRunning((was) => {
        if (was) setNotice({ kind: "error", text: t("The connection closed; the run may not have finished.") });
        return null;
      });
    };
  };
  const send = (frame) => {
    const ws = socket.current;
    if (ws && ws.readyState === WebSocket.OPEN && current.current === conversation) ws.send(JSON.stringify(frame));
    else connect(conversation, frame);
  };

  const submit = (event) => {
    event.preventDefault();
    const text = draft.trim();
    if (!text || running) return;
    const id = nextId("r");
    setNotice(null);
    report({});
    setRunning(id);
    setDraft("");
    setMessages((list) => [...list, { key: "u" + id, role: "user", text: text }]);
    const frame = { type: "message", id: id, content: text, model: model, workflow: slug, trace: true };
    if (version !== null) frame.version = version;
    send(frame);
  };
  // A card's decision: the resumed run's frames carry its id, and its answer goes on in
  // the card.
  const decide = (key, frame, which) => {
    const id = nextId("d");
    setMessages((list) => list.map((entry) => entry.key === key ? Object.assign({}, entry, { used: which, run: id }) : entry));
    setRunning(id);
    setNotice(null);
    send(Object.assign({ id: id, trace: true }, frame));
  };
  const newRun = () => {
    if (socket.current) { socket.current.onclose = null; socket.current.close(); socket.current = null; }
    current.current = null;
    setConversation(null);
    setMessages([]);
    setSteps([]);
    setPicked(null);
    setNotice(null);
    setRunning(null);
    report({});
  };
  const openRun = (id) => {
    if (!id) { newRun(); return; }
    newRun();
    connect(id, null);
    loadSteps(id).then((found) => { if (current.current === id) report(statusesOf(found)); });
  };
  const fork = (step) => {
    if (!conversation || running) return;
    setNotice(null);
    postJSON(config, url(config, "replay", { id: conversation }), { checkpoint_id: step.checkpoint_id })
      .then((branch) => {
        newRun();
        loadRuns();
        const id = nextId("c");
        if (branch.next && branch.next.length) {
          setRunning(id);
          connect(branch.conversation_id, { type: "continue", id: id });
        } else {
          connect(branch.conversation_id, null);
          setNotice({ kind: "info", text: t("The branch starts after the turn ended: send a message to go on.") });
        }
        loadSteps(branch.conversation_id);
      })
      .catch((failure) => setNotice({ kind: "error", text: failure.message }));
  };

  const turns = [];
  steps.forEach((step) => {
    const last = turns[turns.length - 1];
    if (last && last.turn === step.turn) last.steps.push(step);
    else turns.push({ turn: step.turn, steps: [step] });
  });
  const runLabel = (run) => {
    const when = new Date(run.updated_at).toLocaleString(config.language || undefined);
    const version = run.workflow_version ? " · " + interpolate(t("v%(number)s"), { number: run.workflow_version }, true) : "";
    return run.title + " · " + when + version;
  };
  const runsLabel = target === null ? t("Runs the published version")
    : target === live ? interpolate(t("Runs version %(number)s (live)"), { number: target }, true)
      : props.published ? interpolate(t("Runs version %(number)s (published earlier, not live)"), { number: target }, true)
        : interpolate(t("Runs version %(number)s (draft)"), { number: target }, true);

  return h("section", { className: "run-panel", "aria-label": t("Run") },
    h("div", { className: "run-head" },
      h("label", { className: "run-field" }, h("span", null, t("Model")),
        h("select", { className: "run-model", value: model, onChange: (event) => setModel(event.target.value) },
          models.map((item) => h("option", { key: item.name, value: item.name }, item.label || item.name)))),
      h("label", { className: "run-field" }, h("span", null, t("Past runs")),
        h("select", { className: "run-picker", value: conversation || "", onChange: (event) => openRun(event.target.value) },
          h("option", { value: "" }, t("— a new run —")),
          conversation && !runs.some((run) => run.conversation_id === conversation)
            ? h("option", { value: conversation }, t("This run")) : null,
          runs.map((run) => h("option", { key: run.conversation_id, value: run.conversation_id }, runLabel(run))))),
      h("button", { type: "button", className: "run-new", onClick: newRun, disabled: Boolean(running) }, "＋ " + t("New run"))),
    h("p", { className: "run-version", "data-version": target === null ? "" : String(target) },
      h("span", { className: "run-version-label" }, runsLabel),
      version !== null && dirty ? h("span", { className: "run-unsaved", role: "note" },
        t("Unsaved changes on the canvas are not in the run: save a draft first.")) : null),
    notice ? h("p", { className: "run-notice " + notice.kind, role: notice.kind === "error" ? "alert" : "status" }, notice.text) : null,
    h("div", { className: "run-chat", "aria-live": "polite" },
      messages.length ? null : h("p", { className: "muted empty" }, t("Send a message to run this version of the workflow; its nodes light up on the canvas as they run.")),
      messages.map((entry) => entry.approval !== undefined
        ? h(ApprovalCard, { key: entry.key, entry: entry, disabled: Boolean(running), onDecide: (frame, which) => decide(entry.key, frame, which) })
        : h("div", { key: entry.key, className: "run-msg " + entry.role + (entry.done ? " done" : "") },
          h("span", { className: "run-role" }, entry.role === "user" ? t("You") : t("Workflow")),
          h("div", { className: "run-text" }, entry.text)))),
    h("form", { className: "run-send", onSubmit: submit },
      h("textarea", {
        className: "run-input", rows: 2, value: draft, placeholder: t("Message the workflow…"), "aria-label": t("Message"),
        onChange: (event) => setDraft(event.target.value),
        onKeyDown: (event) => { if (event.key === "Enter" && !event.shiftKey && !event.nativeEvent.isComposing) submit(event); },
      }),
      h("button", { type: "submit", className: "primary", disabled: Boolean(running) || !draft.trim() || !model },
        running ? t("Running…") : t("Send"))),
    h("div", { className: "run-steps" },
      h("h3", null, t("Steps")),
      steps.length ? null : h("p", { className: "muted" }, t("The run's steps appear here after each turn.")),
      turns.map((group) => h("div", { key: String(group.turn), className: "run-turn" },
        h("h4", null, interpolate(t("Turn %(turn)s"), { turn: group.turn == null ? "–" : group.turn }, true)),
        h("ol", { className: "run-step-list" }, group.steps.map((step) => h(StepRow, {
          key: step.checkpoint_id, step: step, selected: step.checkpoint_id === picked,
          onSelect: () => setPicked(step.checkpoint_id === picked ? null : step.checkpoint_id),
        }, step.checkpoint_id === picked
          ? h(StepDetail, { step: step, busy: Boolean(running), onFork: () => fork(step) }) : null)))))));
}
