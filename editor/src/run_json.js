// A JSON value as a collapsible tree (<details> per object and list), for the run
// panel's step states.
import { createElement as h } from "react";
import { interpolate, t, tn } from "./i18n.js";

function preview(value) {
  if (Array.isArray(value)) return interpolate(tn("[%(count)s item]", "[%(count)s items]", value.length), { count: value.length }, true);
  const count = Object.keys(value).length;
  return interpolate(tn("{%(count)s key}", "{%(count)s keys}", count), { count: count }, true);
}

function Leaf(props) {
  const value = props.value;
  const kind = value === null ? "null" : typeof value;
  return h("span", { className: "json-" + kind }, kind === "string" ? JSON.stringify(value) : String(value));
}

function Node(props) {
  const value = props.value;
  const label = props.label === undefined ? null : h("span", { className: "json-key" }, props.label);
  if (value === null || typeof value !== "object") {
    return h("div", { className: "json-row" }, label, label ? ": " : null, h(Leaf, { value: value }));
  }
  const keys = Array.isArray(value) ? value.map((_item, index) => index) : Object.keys(value);
  if (!keys.length) {
    return h("div", { className: "json-row" }, label, label ? ": " : null, h("span", { className: "json-empty" }, Array.isArray(value) ? "[]" : "{}"));
  }
  const depth = props.depth || 0;
  return h("details", { className: "json-node", open: depth < props.openDepth || undefined },
    h("summary", null, label, label ? " " : null, h("span", { className: "json-preview" }, preview(value))),
    h("div", { className: "json-children" }, keys.map((key) => h(Node, {
      key: key, label: String(key), value: value[key], depth: depth + 1, openDepth: props.openDepth,
    }))));
}

// props: value, label (the root's name), openDepth (levels shown open; default 1: the
// root's keys; 0: closed), className
export function JsonView(props) {
  return h("div", { className: "json-view " + (props.className || ""), "aria-label": props.label || t("value") },
    h(Node, { value: props.value, label: props.label, openDepth: props.openDepth === undefined ? 1 : props.openDepth }));
}
