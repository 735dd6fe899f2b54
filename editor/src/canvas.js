// The canvas: the workflow's nodes and edges drawn with @xyflow/react (zoom, pan,
// controls, minimap), a node card per node, drops from the palette.
import { createElement as h, memo, useCallback } from "react";
import {
  Background, Controls, Handle, MarkerType, MiniMap, Position, ReactFlow, useReactFlow,
} from "@xyflow/react";
import { t, interpolate } from "./i18n.js";
import { hasSourceHandle, isRouter, nodeRefs, summary } from "./graph.js";

export const DRAG_TYPE = "application/x-openclaw-node-type";

const STATUS_LABELS = {
  running: () => t("running"),
  done: () => t("done"),
  waiting: () => t("waiting"),
  error: () => t("error"),
};

function statusLine(status) {
  const parts = [(STATUS_LABELS[status.status] || (() => status.status))()];
  if (typeof status.ms === "number") parts.push(interpolate(t("%(ms)s ms"), { ms: Math.round(status.ms) }, true));
  const tools = (status.tools || []).map((tool) => tool.name + (tool.status ? " (" + tool.status + ")" : ""));
  if (tools.length) parts.push(tools.join(", "));
  return parts.join(" · ");
}

// One node: its id and type, a short summary of its config, the entry marker, its
// problems (red) and the run's status for it (coloured).
const WorkflowNode = memo(function WorkflowNode(props) {
  const data = props.data;
  const classes = ["wf-node"];
  if (data.problems.length) classes.push("invalid");
  if (data.status) classes.push("status-" + data.status.status);
  if (data.entry) classes.push("entry");
  return h("div", { className: classes.join(" "), "data-node": props.id, title: data.description || undefined },
    h(Handle, { type: "target", position: Position.Top, className: "wf-handle", "aria-label": t("Input") }),
    h("div", { className: "wf-head" },
      h("span", { className: "wf-type" }, data.label),
      data.entry ? h("span", { className: "wf-entry", title: t("The run starts here") }, "▶ " + t("Entry")) : null),
    h("strong", { className: "wf-id", title: props.id }, props.id),
    data.summary.length ? h("dl", { className: "wf-summary" },
      data.summary.map((line, index) => h("div", { key: index },
        h("dt", null, line.key), h("dd", null, line.text)))) : null,
    data.status ? h("div", { className: "wf-status", role: "status" }, statusLine(data.status)) : null,
    data.problems.length ? h("ul", { className: "wf-problems" },
      data.problems.map((message, index) => h("li", { key: index }, message))) : null,
    data.source ? h(Handle, { type: "source", position: Position.Bottom, className: "wf-handle", "aria-label": t("Output") })
      : data.router ? h(Handle, { // where the branches leave; their targets are set in the form
        type: "source", position: Position.Bottom, className: "wf-handle wf-branches", isConnectable: false,
        title: t("A router's next nodes are chosen in its form"), "aria-label": t("Branches"),
      }) : null);
});

const NODE_TYPES = { workflow: WorkflowNode };
const ARROW = { type: MarkerType.ArrowClosed, width: 18, height: 18 };

// React Flow's nodes and edges for a graph (derived on every change).
export function flowElements(graph, context) {
  const definition = graph.definition;
  const types = context.types;
  const nodes = definition.nodes.map((node) => {
    const nodeType = types[node.type];
    const size = context.measured[node.id];
    return {
      id: node.id,
      type: "workflow",
      position: graph.layout[node.id] || { x: 0, y: 0 },
      selected: context.selection.nodes.indexOf(node.id) !== -1,
      measured: size ? { width: size.width, height: size.height } : undefined,
      data: {
        label: nodeType ? nodeType.label : node.type,
        description: nodeType ? nodeType.description : "",
        summary: summary(node, nodeType),
        entry: definition.entry === node.id,
        problems: context.problems[node.id] || [],
        status: context.statuses[node.id] || null,
        source: hasSourceHandle(nodeType),
        router: isRouter(nodeType),
      },
    };
  });
  const known = new Set(definition.nodes.map((node) => node.id));
  const edges = [];
  definition.edges.forEach((edge, index) => {
    if (!known.has(edge.source) || !known.has(edge.target)) return;
    const id = "edge:" + index;
    edges.push({
      id: id, source: edge.source, target: edge.target, markerEnd: ARROW,
      selected: context.selection.edges.indexOf(id) !== -1, data: { index: index },
    });
  });
  for (const node of definition.nodes) {
    for (const ref of nodeRefs(node, types[node.type])) {
      if (!known.has(ref.target)) continue;
      edges.push({
        id: "branch:" + node.id + ":" + ref.path.join("."), source: node.id, target: ref.target,
        label: ref.label, className: "wf-branch", markerEnd: ARROW, deletable: false,
        selectable: false, focusable: false, style: { strokeDasharray: "6 4" },
        labelBgPadding: [4, 2], labelBgBorderRadius: 4,
      });
    }
  }
  return { nodes: nodes, edges: edges };
}

// The canvas. `handlers`: onNodesChange, onEdgesChange, onConnect, onDelete({nodes,
// edges}), onDrop(type, position), onNodeClick(id), onPaneClick(), onDragStart().
export function Canvas(props) {
  const flow = useReactFlow();
  const handlers = props.handlers;

  const onDragOver = useCallback((event) => {
    if (Array.from(event.dataTransfer.types).indexOf(DRAG_TYPE) === -1) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  }, []);

  const onDrop = useCallback((event) => {
    const type = event.dataTransfer.getData(DRAG_TYPE);
    if (!type) return;
    event.preventDefault();
    handlers.onDrop(type, flow.screenToFlowPosition({ x: event.clientX, y: event.clientY }));
  }, [flow, handlers]);

  const onBeforeDelete = useCallback((doomed) => {
    handlers.onDelete(doomed);
    return Promise.resolve(false); // the deletion is applied to the graph above
  }, [handlers]);

  return h("div", { className: "wf-canvas", onDragOver: onDragOver, onDrop: onDrop, "aria-label": t("Workflow canvas"), role: "region" },
    h(ReactFlow, {
      nodes: props.nodes,
      edges: props.edges,
      nodeTypes: NODE_TYPES,
      onNodesChange: handlers.onNodesChange,
      onEdgesChange: handlers.onEdgesChange,
      onConnect: handlers.onConnect,
      onBeforeDelete: onBeforeDelete,
      onNodeClick: (event, node) => handlers.onNodeClick(node.id),
      onPaneClick: handlers.onPaneClick,
      onNodeDragStart: handlers.onDragStart,
      isValidConnection: (connection) => connection.source !== connection.target,
      nodesDraggable: !props.readOnly,
      nodesConnectable: !props.readOnly,
      deleteKeyCode: props.readOnly ? null : ["Delete", "Backspace"],
      colorMode: props.colorMode,
      fitView: true,
      fitViewOptions: { padding: 0.2, maxZoom: 1 },
      minZoom: 0.2,
      maxZoom: 2,
      ariaLabelConfig: ariaLabels(),
    },
    h(Background, { gap: 20, size: 1 }),
    h(Controls, { showInteractive: false }),
    h(MiniMap, { pannable: true, zoomable: true,
      nodeClassName: (node) => (node.data.problems.length ? "invalid" : node.data.status ? "status-" + node.data.status.status : "") })));
}

const DIRECTIONS = { up: () => t("up"), down: () => t("down"), left: () => t("left"), right: () => t("right") };
let labels = null;

// React Flow's own accessible names and announcements, translated (made once).
function ariaLabels() {
  if (labels) return labels;
  labels = {
    "node.a11yDescription.default": t("Press Enter or Space to select a node. Press Delete to remove it and Escape to cancel."),
    "node.a11yDescription.keyboardDisabled": t("Press Enter or Space to select a node. You can then use the arrow keys to move the node around. Press Delete to remove it and Escape to cancel."),
    "edge.a11yDescription.default": t("Press Enter or Space to select an edge. You can then press Delete to remove it or Escape to cancel."),
    "controls.ariaLabel": t("Canvas controls"),
    "controls.zoomIn.ariaLabel": t("Zoom in"),
    "controls.zoomOut.ariaLabel": t("Zoom out"),
    "controls.fitView.ariaLabel": t("Fit view"),
    "controls.interactive.ariaLabel": t("Toggle interactivity"),
    "minimap.ariaLabel": t("Minimap"),
    "handle.ariaLabel": t("Handle"),
    "node.a11yDescription.ariaLiveMessage": (move) => interpolate(
      t("Moved the selected node %(direction)s. New position: x %(x)s, y %(y)s."),
      { direction: (DIRECTIONS[move.direction] || (() => move.direction))(), x: move.x, y: move.y }, true),
  };
  return labels;
}
