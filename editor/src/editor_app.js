// One workflow in the editor: toolbar, palette, canvas, and the side panel's tabs (the
// selected node's form, the versions, a test run). The graph lives in an undo history;
// every change to the definition is validated by the server (debounced) and the
// problems are shown on their nodes.
import { createElement as h, useCallback, useEffect, useMemo, useRef, useState } from "react";
import { ReactFlowProvider, useReactFlow } from "@xyflow/react";
import { t, tn, interpolate } from "./i18n.js";
import { getJSON, postJSON, url } from "./api.js";
import {
  NODE_SIZE, addNode, autoLayout, connect, idProblem, moveNode, needsLayout, nodeById, normalized,
  removeItems, renameNode, setConfig, setEntry,
} from "./graph.js";
import { useHistory } from "./history.js";
import { Canvas, flowElements } from "./canvas.js";
import { NodeForm } from "./form.js";
import { Palette, Toolbar } from "./toolbar.js";
import { VersionsPanel } from "./versions.js";
import { RunPanel } from "./run_panel.js";

const VALIDATE_DELAY_MS = 400;

function graphOf(version, types) {
  const graph = {
    definition: normalized(version && version.definition),
    layout: (version && version.layout && typeof version.layout === "object") ? version.layout : {},
  };
  return needsLayout(graph) ? autoLayout(graph, types) : graph;
}

function located(list, definition) {
  const byNode = {};
  const general = [];
  for (const problem of list || []) {
    if (problem.node && nodeById(definition, problem.node)) (byNode[problem.node] = byNode[problem.node] || []).push(problem.message);
    else general.push(problem.message);
  }
  return { byNode: byNode, general: general };
}

function isTyping(target) {
  return Boolean(target && target.closest && target.closest("input, textarea, select, [contenteditable=''], [contenteditable='true']"));
}

// Loads the node types and the workflow, then shows the workspace.
export function Editor(props) {
  const config = props.config;
  const [loaded, setLoaded] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    Promise.all([getJSON(config, url(config, "node-types")), getJSON(config, url(config, "workflow-api", { slug: config.slug }))])
      .then((answers) => setLoaded({ catalog: answers[0], workflow: answers[1].workflow, version: answers[1].version }))
      .catch((failure) => setError(failure.message));
  }, []);
  if (error) {
    return h("main", { className: "wf-failed" },
      h("p", { className: "form-error", role: "alert" }, interpolate(t("The workflow could not be opened: %(reason)s"), { reason: error }, true)),
      h("a", { href: config.urls.workflows }, "← " + t("Workflows")));
  }
  if (!loaded) return h("main", { className: "wf-loading", "aria-busy": "true" }, t("Loading…"));
  return h(ReactFlowProvider, null, h(Workspace, Object.assign({ config: config }, loaded)));
}

function Workspace(props) {
  const config = props.config;
  const slug = config.slug;
  const catalog = props.catalog;
  const types = useMemo(() => {
    const map = {};
    for (const type of catalog.node_types || []) map[type.type] = type;
    return map;
  }, [catalog]);
  const flow = useReactFlow();
  const history = useHistory(useMemo(() => graphOf(props.version, types), []));
  const graph = history.present;
  const definition = graph.definition;

  const [workflow, setWorkflow] = useState(props.workflow);
  const [version, setVersion] = useState(props.version);
  const [saved, setSaved] = useState(graph);
  const [measured, setMeasured] = useState({});
  const [selection, setSelection] = useState({ nodes: [], edges: [] });
  const [focus, setFocus] = useState(null);
  const [problems, setProblems] = useState({ byNode: {}, general: [] });
  const [checking, setChecking] = useState(null);
  const [statuses, setStatuses] = useState({});
  const [notice, setNotice] = useState(null);
  const [note, setNote] = useState("");
  const [tab, setTab] = useState("node");
  const [refresh, setRefresh] = useState(0);
  const [busy, setBusy] = useState(false);
  const [theme, setTheme] = useState(document.documentElement.dataset.theme === "dark" ? "dark" : "light");
  const canvasRef = useRef(null);
  const readOnly = !config.can_change || workflow.can_change === false;
  const dirty = graph !== saved;

  // --- live validation ---------------------------------------------------------------
  const validation = useRef(0);
  useEffect(() => {
    const serial = ++validation.current;
    const timer = setTimeout(() => {
      postJSON(config, url(config, "workflow-validate"), { slug: slug, definition: definition })
        .then((body) => {
          if (serial !== validation.current) return;
          setProblems(located(body.problems, definition));
          setChecking(null);
        })
        .catch((failure) => {
          if (serial === validation.current) setChecking(failure.message);
        });
    }, VALIDATE_DELAY_MS);
    return () => clearTimeout(timer);
  }, [definition]);

  // --- undo / redo keys -------------------------------------------------------------
  useEffect(() => {
    const onKey = (event) => {
      if (!(event.ctrlKey || event.metaKey) || event.altKey || isTyping(event.target)) return;
      const key = event.key.toLowerCase();
      if (key === "z" && !event.shiftKey) history.undo();
      else if (key === "y" || (key === "z" && event.shiftKey)) history.redo();
      else return;
      event.preventDefault();
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [history.undo, history.redo]);

  useEffect(() => {
    const onLeave = (event) => {
      if (!dirty) return undefined;
      event.preventDefault();
      event.returnValue = "";
      return "";
    };
    window.addEventListener("beforeunload", onLeave);
    return () => window.removeEventListener("beforeunload", onLeave);
  }, [dirty]);

  // --- changes from the canvas ------------------------------------------------------
  const select = (nodes, edges) => setSelection({ nodes: nodes, edges: edges });
  const added = (result) => {
    history.commit(result.graph);
    select([result.id], []);
    setFocus(result.id);
    setTab("node");
  };
  const addAt = (type, position) => {
    if (readOnly) return;
    added(addNode(graph, type, { x: position.x - NODE_SIZE.width / 2, y: position.y - NODE_SIZE.height / 2 }));
  };
  const addInMiddle = (type) => {
    const box = canvasRef.current.getBoundingClientRect();
    const middle = flow.screenToFlowPosition({ x: box.left + box.width / 2, y: box.top + box.height / 2 });
    const taken = (point) => Object.keys(graph.layout).some((id) => {
      const at = graph.layout[id];
      return Math.abs(at.x - point.x) < 30 && Math.abs(at.y - point.y) < 30;
    });
    let point = { x: middle.x - NODE_SIZE.width / 2, y: middle.y - NODE_SIZE.height / 2 };
    for (let step = 0; step < 20 && taken(point); step++) point = { x: point.x + 32, y: point.y + 32 };
    if (!readOnly) added(addNode(graph, type, point));
  };

  const handlers = {
    onNodesChange: (changes) => {
      const sizes = {};
      let moved = null;
      let picked = null;
      for (const change of changes) {
        if (change.type === "dimensions" && change.dimensions) sizes[change.id] = change.dimensions;
        if (change.type === "position" && change.position) (moved = moved || []).push(change);
        if (change.type === "select") {
          picked = picked || selection.nodes.slice();
          picked = picked.filter((id) => id !== change.id).concat(change.selected ? [change.id] : []);
        }
      }
      if (Object.keys(sizes).length) setMeasured((current) => Object.assign({}, current, sizes));
      if (moved && !readOnly) {
        history.commit((current) => moved.reduce((next, change) => moveNode(next, change.id, change.position), current), { key: "drag" });
      }
      if (picked) setSelection((current) => ({ nodes: picked, edges: current.edges }));
    },
    onEdgesChange: (changes) => {
      const picks = changes.filter((change) => change.type === "select");
      if (!picks.length) return;
      setSelection((current) => {
        let edges = current.edges.slice();
        for (const change of picks) edges = edges.filter((id) => id !== change.id).concat(change.selected ? [change.id] : []);
        return { nodes: current.nodes, edges: edges };
      });
    },
    onConnect: (connection) => {
      const result = connect(graph, connection.source, connection.target, types);
      if (result.graph !== graph) history.commit(result.graph);
      setNotice(result.message ? { kind: "info", text: result.message } : null);
    },
    onDelete: (doomed) => {
      const nodeIds = doomed.nodes.map((node) => node.id);
      const edgeIndexes = doomed.edges.filter((edge) => edge.data && typeof edge.data.index === "number").map((edge) => edge.data.index);
      if (!nodeIds.length && !edgeIndexes.length) return;
      history.commit(removeItems(graph, nodeIds, edgeIndexes));
      select([], []);
      if (nodeIds.indexOf(focus) !== -1) setFocus(null);
    },
    onDrop: addAt,
    onNodeClick: (id) => {
      setFocus(id);
      setTab((current) => (current === "versions" ? "node" : current));
    },
    onPaneClick: () => setFocus(null),
    onDragStart: () => history.seal(),
  };

  // --- changes from the form and the toolbar ----------------------------------------
  const focused = focus ? nodeById(definition, focus) : null;
  const rename = (to) => {
    const problem = idProblem(to, definition, focus);
    if (problem) return problem;
    history.commit(renameNode(graph, focus, to, types));
    setMeasured((current) => Object.assign({}, current, { [to]: current[focus] }));
    select([to], []);
    setFocus(to);
    return null;
  };
  const layout = () => {
    history.commit(autoLayout(graph, types, measured));
    setTimeout(() => flow.fitView({ padding: 0.2, maxZoom: 1, duration: 200 }), 60);
  };
  const save = (publish) => {
    const sent = graph;
    setBusy(true);
    setNotice({ kind: "info", text: publish ? t("Publishing…") : t("Saving…") });
    postJSON(config, url(config, "workflow-versions", { slug: slug }),
      { definition: sent.definition, layout: sent.layout, note: note, publish: publish })
      .then((body) => {
        const made = body.version;
        setVersion(made);
        setSaved(sent);
        setNote("");
        setRefresh((count) => count + 1);
        if (publish) setWorkflow((current) => Object.assign({}, current, { live_version: made.number }));
        setProblems(located([], sent.definition));
        setNotice({ kind: "ok", text: publish
          ? interpolate(t("Version %(number)s is published: new runs use it."), { number: made.number }, true)
          : interpolate(t("Saved as draft version %(number)s."), { number: made.number }, true) });
      })
      .catch((failure) => {
        if (failure.code === "invalid_definition") {
          setProblems(located(failure.detail.problems, sent.definition));
          setNotice({ kind: "error", text: t("Not saved: the workflow has problems (marked on its nodes).") });
        } else {
          setNotice({ kind: "error", text: interpolate(t("Not saved: %(reason)s"), { reason: failure.message }, true) });
        }
      })
      .finally(() => setBusy(false));
  };
  const open = (opened) => {
    if (dirty && !window.confirm(t("Open this version and drop the unsaved changes?"))) return;
    const next = graphOf(opened, types);
    history.commit(next, { record: false });
    setSaved(next);
    setVersion(opened);
    setFocus(null);
    select([], []);
    setTimeout(() => flow.fitView({ padding: 0.2, maxZoom: 1 }), 60);
  };
  const published = (made) => {
    setWorkflow((current) => Object.assign({}, current, { live_version: made.number }));
    if (version && made.number === version.number) setVersion(made);
    setRefresh((count) => count + 1);
  };
  const onNodeStatus = useCallback((next) => setStatuses(next || {}), []);

  const elements = useMemo(() => flowElements(graph, {
    types: types, measured: measured, selection: selection, problems: problems.byNode, statuses: statuses,
  }), [graph, types, measured, selection, problems, statuses]);
  const context = useMemo(() => ({
    nodeIds: definition.nodes.map((node) => node.id),
    tools: catalog.tools || [],
    workflows: (catalog.workflows || []).filter((item) => item.slug !== slug),
    models: catalog.models && catalog.models.length ? catalog.models : (config.models || []).map((model) => model.name),
  }), [definition, catalog]);
  const problemCount = Object.keys(problems.byNode).reduce((sum, id) => sum + problems.byNode[id].length, problems.general.length);

  const tabs = [["node", t("Node")], ["versions", t("Versions")], ["run", t("Run")]];
  return h("div", { className: "wf-editor", "data-ready": "true" },
    h(Toolbar, {
      config: config, workflow: workflow, version: version, dirty: dirty, busy: busy, note: note, onNote: setNote,
      canUndo: history.canUndo, canRedo: history.canRedo, onUndo: history.undo, onRedo: history.redo,
      onLayout: layout, onSave: save, onTheme: setTheme,
    }),
    h("div", { className: "wf-body" },
      h(Palette, { types: catalog.node_types || [], readOnly: readOnly, onAdd: addInMiddle }),
      h("div", { className: "wf-stage", ref: canvasRef },
        h("div", { className: "wf-messages" },
          h("div", { className: "wf-check " + (checking ? "unknown" : problemCount ? "bad" : "good"), role: "status", id: "check-state" },
            checking ? interpolate(t("Not checked: %(reason)s"), { reason: checking }, true)
              : problemCount ? interpolate(tn("%(count)s problem to fix", "%(count)s problems to fix", problemCount), { count: problemCount }, true) : "✓ " + t("No problems")),
          notice ? h("div", { className: "wf-notice " + notice.kind, role: notice.kind === "error" ? "alert" : "status", id: "notice" },
            notice.text, h("button", { type: "button", className: "icon", "aria-label": t("Close"), title: t("Close"), onClick: () => setNotice(null) }, "✕")) : null,
          problems.general.length ? h("ul", { className: "wf-banner", role: "alert", id: "general-problems" },
            problems.general.map((message, index) => h("li", { key: index }, message))) : null),
        h(Canvas, { nodes: elements.nodes, edges: elements.edges, handlers: handlers, readOnly: readOnly, colorMode: theme })),
      h("aside", { className: "wf-side", "aria-label": t("Details") },
        h("div", { className: "tabs", role: "tablist" }, tabs.map((item) => h("button", {
          key: item[0], type: "button", role: "tab", id: "tab-" + item[0], "aria-selected": tab === item[0] ? "true" : "false",
          "aria-controls": "panel-" + item[0], onClick: () => setTab(item[0]),
        }, item[1]))),
        h("div", { className: "tab-panel", role: "tabpanel", id: "panel-node", "aria-labelledby": "tab-node", hidden: tab !== "node" },
          focused ? h(NodeForm, {
            key: focused.id, node: focused, nodeType: types[focused.type], entry: definition.entry === focused.id,
            problems: problems.byNode[focused.id] || [], context: context, readOnly: readOnly,
            onConfig: (next, key) => history.commit(setConfig(graph, focused.id, next), { key: "config:" + focused.id + ":" + key }),
            onBlur: history.seal,
            onRename: rename,
            onEntry: () => history.commit(setEntry(graph, focused.id)),
            onDelete: () => handlers.onDelete({ nodes: [{ id: focused.id }], edges: [] }),
          }) : h("p", { className: "muted empty" }, t("Select a node on the canvas to edit its settings."))),
        h("div", { className: "tab-panel", role: "tabpanel", id: "panel-versions", "aria-labelledby": "tab-versions", hidden: tab !== "versions" },
          h(VersionsPanel, { config: config, slug: slug, current: version ? version.number : null, refresh: refresh, onOpen: open, onPublished: published })),
        h("div", { className: "tab-panel", role: "tabpanel", id: "panel-run", "aria-labelledby": "tab-run", hidden: tab !== "run" },
          h(RunPanel, { slug: slug, config: config, version: version ? version.number : null, live: workflow.live_version, published: Boolean(version && version.published_at), dirty: dirty, selectedNode: focus, onNodeStatus: onNodeStatus })))));
}
