// The workflow being edited, as plain data, and the pure functions that change it.
//
// A graph is {definition, layout}: definition = {entry, nodes: [{id, type, config}],
// edges: [{source, target}]} (what the server validates and runs; config keys the
// editor does not know are kept as they are), layout = {nodeId: {x, y}}. Every change
// returns a new graph (the undo history keeps the old ones).
import dagre from "@dagrejs/dagre";
import { t, tn, interpolate } from "./i18n.js";

export const NODE_ID = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/;
const RESERVED = ["begin"];
export const NODE_SIZE = { width: 220, height: 96 };

// --- reading ------------------------------------------------------------------------

export function normalized(definition) {
  const source = definition && typeof definition === "object" ? definition : {};
  const nodes = Array.isArray(source.nodes) ? source.nodes : [];
  const edges = Array.isArray(source.edges) ? source.edges : [];
  const result = Object.assign({}, source, { nodes: nodes, edges: edges });
  if (!result.entry && nodes.length) result.entry = nodes[0].id;
  return result;
}

export function nodeById(definition, id) {
  return definition.nodes.find((node) => node.id === id) || null;
}

// The schema `schema` stands for, following a local "$ref" ("#/$defs/…") of `root`.
export function resolve(schema, root) {
  let current = schema || {};
  for (let depth = 0; depth < 8 && typeof current.$ref === "string"; depth++) {
    if (current.$ref.indexOf("#/") !== 0) return {};
    let target = root;
    for (const part of current.$ref.slice(2).split("/")) target = target ? target[part] : undefined;
    current = Object.assign({}, target || {}, current, { $ref: undefined });
  }
  return current;
}

export function typeName(schema) {
  const type = schema.type;
  if (Array.isArray(type)) return type.find((name) => name !== "null");
  return type;
}

// Where a node's config names other nodes: [{path: [key] | [key, index, key], label,
// target}], from its type's schema ("x-node-ref": true strings, also in arrays of objects).
export function nodeRefs(node, nodeType) {
  const schema = (nodeType && nodeType.schema) || {};
  const config = (node && node.config) || {};
  const found = [];
  const properties = schema.properties || {};
  for (const key of Object.keys(properties)) {
    const property = resolve(properties[key], schema);
    const label = property.title || key;
    if (property["x-node-ref"]) {
      if (typeof config[key] === "string" && config[key]) {
        found.push({ path: [key], label: label, target: config[key] });
      }
      continue;
    }
    const items = resolve(property.items, schema);
    if (typeName(property) !== "array" || !items.properties || !Array.isArray(config[key])) continue;
    config[key].forEach((item, index) => {
      for (const inner of Object.keys(items.properties)) {
        const innerSchema = resolve(items.properties[inner], schema);
        if (innerSchema["x-node-ref"] && item && typeof item[inner] === "string" && item[inner]) {
          found.push({ path: [key, index, inner], label: label + " " + (index + 1), target: item[inner] });
        }
      }
    });
  }
  return found;
}

function setPath(config, path, value) {
  if (path.length === 1) return Object.assign({}, config, { [path[0]]: value });
  const list = config[path[0]].slice();
  list[path[1]] = Object.assign({}, list[path[1]], { [path[2]]: value });
  return Object.assign({}, config, { [path[0]]: list });
}

export function isRouter(nodeType) {
  return Boolean(nodeType && nodeType.router);
}

export function hasSourceHandle(nodeType) {
  return Boolean(nodeType) && !nodeType.router && !nodeType.terminal;
}

// --- changing -----------------------------------------------------------------------

export function idProblem(id, definition, current) {
  if (!NODE_ID.test(id) || id.indexOf("__") !== -1 || RESERVED.indexOf(id) !== -1) {
    return t("A node id is a letter, then letters, digits, _ or - (at most 64), without “__”, and not “begin”.");
  }
  if (id !== current && nodeById(definition, id)) {
    return interpolate(t("There is already a node “%(id)s”."), { id: id }, true);
  }
  return null;
}

export function freshId(type, definition) {
  let base = String(type).replace(/[^A-Za-z0-9_-]/g, "_").replace(/_{2,}/g, "_").slice(0, 60);
  if (!/^[A-Za-z]/.test(base)) base = "node_" + base;
  let candidate = base;
  for (let n = 2; nodeById(definition, candidate) || idProblem(candidate, definition, null); n++) {
    candidate = base + "_" + n;
  }
  return candidate;
}

export function addNode(graph, type, position) {
  const definition = graph.definition;
  const id = freshId(type, definition);
  const node = { id: id, type: type, config: {} };
  const next = Object.assign({}, definition, { nodes: definition.nodes.concat([node]) });
  if (!next.entry) next.entry = id;
  const layout = Object.assign({}, graph.layout, { [id]: rounded(position) });
  return { graph: { definition: next, layout: layout }, id: id };
}

export function setConfig(graph, id, config) {
  const nodes = graph.definition.nodes.map((node) => (node.id === id ? Object.assign({}, node, { config: config }) : node));
  return Object.assign({}, graph, { definition: Object.assign({}, graph.definition, { nodes: nodes }) });
}

export function setEntry(graph, id) {
  return Object.assign({}, graph, { definition: Object.assign({}, graph.definition, { entry: id }) });
}

// Renames node `from` to `to`: its edges, the entry, its position and every other
// node's reference to it follow.
export function renameNode(graph, from, to, types) {
  const definition = graph.definition;
  const nodes = definition.nodes.map((node) => {
    let config = node.config || {};
    for (const ref of nodeRefs(node, types[node.type])) {
      if (ref.target === from) config = setPath(config, ref.path, to);
    }
    const renamed = node.id === from ? Object.assign({}, node, { id: to }) : node;
    return config === (node.config || {}) ? renamed : Object.assign({}, renamed, { config: config });
  });
  const edges = definition.edges.map((edge) => ({
    source: edge.source === from ? to : edge.source,
    target: edge.target === from ? to : edge.target,
  }));
  const layout = {};
  for (const key of Object.keys(graph.layout)) layout[key === from ? to : key] = graph.layout[key];
  const entry = definition.entry === from ? to : definition.entry;
  return { definition: Object.assign({}, definition, { entry: entry, nodes: nodes, edges: edges }), layout: layout };
}

// An edge from `source` to `target`: {graph, message}. A node goes to one next node,
// so a second edge replaces the first (and says so); routers and end nodes have none.
export function connect(graph, source, target, types) {
  const definition = graph.definition;
  const node = nodeById(definition, source);
  const nodeType = node && types[node.type];
  if (!node || !nodeById(definition, target)) return { graph: graph, message: null };
  if (!hasSourceHandle(nodeType)) {
    const message = isRouter(nodeType)
      ? t("A router's next nodes are chosen in its form, not with edges.")
      : t("An end node has no next node.");
    return { graph: graph, message: message };
  }
  const previous = definition.edges.find((edge) => edge.source === source);
  if (previous && previous.target === target) return { graph: graph, message: null };
  const edges = definition.edges.filter((edge) => edge.source !== source).concat([{ source: source, target: target }]);
  const message = previous
    ? interpolate(t("“%(source)s” now goes to “%(target)s” instead of “%(old)s”: a node has one next node (use a condition or router node to choose)."),
      { source: source, target: target, old: previous.target }, true)
    : null;
  return { graph: Object.assign({}, graph, { definition: Object.assign({}, definition, { edges: edges }) }), message: message };
}

// Removes nodes (with their edges and positions) and edges (by index).
export function removeItems(graph, nodeIds, edgeIndexes) {
  const gone = new Set(nodeIds);
  const definition = graph.definition;
  const nodes = definition.nodes.filter((node) => !gone.has(node.id));
  const edges = definition.edges.filter((edge, index) =>
    edgeIndexes.indexOf(index) === -1 && !gone.has(edge.source) && !gone.has(edge.target));
  const layout = {};
  for (const key of Object.keys(graph.layout)) if (!gone.has(key)) layout[key] = graph.layout[key];
  let entry = definition.entry;
  if (gone.has(entry)) entry = nodes.length ? nodes[0].id : "";
  return { definition: Object.assign({}, definition, { entry: entry, nodes: nodes, edges: edges }), layout: layout };
}

export function moveNode(graph, id, position) {
  return Object.assign({}, graph, { layout: Object.assign({}, graph.layout, { [id]: rounded(position) }) });
}

function rounded(position) {
  return { x: Math.round(position.x), y: Math.round(position.y) };
}

// --- layout -------------------------------------------------------------------------

export function needsLayout(graph) {
  return graph.definition.nodes.some((node) => !graph.layout[node.id]);
}

// Top-to-bottom positions for every node (dagre), edges and routers' branches alike.
export function autoLayout(graph, types, sizes) {
  const layered = new dagre.graphlib.Graph();
  layered.setGraph({ rankdir: "TB", nodesep: 48, ranksep: 64, marginx: 16, marginy: 16 });
  layered.setDefaultEdgeLabel(() => ({}));
  const definition = graph.definition;
  const size = (id) => (sizes && sizes[id]) || NODE_SIZE;
  for (const node of definition.nodes) layered.setNode(node.id, { width: size(node.id).width, height: size(node.id).height });
  const known = (id) => Boolean(nodeById(definition, id));
  for (const edge of definition.edges) if (known(edge.source) && known(edge.target)) layered.setEdge(edge.source, edge.target);
  for (const node of definition.nodes) {
    for (const ref of nodeRefs(node, types[node.type])) if (known(ref.target)) layered.setEdge(node.id, ref.target);
  }
  dagre.layout(layered);
  const layout = {};
  for (const node of definition.nodes) {
    const placed = layered.node(node.id);
    layout[node.id] = rounded({ x: placed.x - size(node.id).width / 2, y: placed.y - size(node.id).height / 2 });
  }
  return Object.assign({}, graph, { layout: layout });
}

// --- a node's summary on the canvas -------------------------------------------------

function shortText(value, length) {
  const text = String(value).replace(/\s+/g, " ").trim();
  return text.length > length ? text.slice(0, length - 1) + "…" : text;
}

// Up to three "key: value" lines of a config (references to nodes are drawn as edges).
export function summary(node, nodeType) {
  const config = node.config && typeof node.config === "object" ? node.config : {};
  const schema = (nodeType && nodeType.schema) || {};
  const properties = schema.properties || {};
  const keys = Object.keys(properties).filter((key) => key in config)
    .concat(Object.keys(config).filter((key) => !(key in properties)));
  const lines = [];
  for (const key of keys) {
    const property = resolve(properties[key], schema);
    const value = config[key];
    if (property["x-node-ref"] || value === undefined || value === null || value === "") continue;
    let text;
    if (typeof value === "boolean") text = value ? t("yes") : t("no");
    else if (Array.isArray(value)) {
      text = value.every((item) => typeof item === "string") ? value.join(", ")
        : interpolate(tn("%(count)s item", "%(count)s items", value.length), { count: value.length }, true);
    } else if (typeof value === "object") text = "{…}";
    else text = String(value);
    lines.push({ key: property.title || key, text: shortText(text, 34) });
    if (lines.length === 3) break;
  }
  return lines;
}
