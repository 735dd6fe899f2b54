// The form of the node selected on the canvas: its id (renaming it updates edges and
// references), whether the run starts there, and its config as fields generated from
// its type's JSON schema. Keys the schema does not name stay in the config, editable
// as JSON under "Other settings".
import { createElement as h, useEffect, useState } from "react";
import { t, interpolate } from "./i18n.js";
import { ObjectFields, JsonField } from "./form_fields.js";

function RenameField(props) {
  const [text, setText] = useState(props.id);
  const [error, setError] = useState(null);
  useEffect(() => {
    setText(props.id);
    setError(null);
  }, [props.id]);
  const apply = () => {
    if (text === props.id) return setError(null);
    setError(props.onRename(text));
  };
  return h("div", { className: "field field-id" },
    h("label", { htmlFor: "wf-node-id" }, t("Node id")),
    h("input", {
      id: "wf-node-id", type: "text", value: text, disabled: props.readOnly, spellCheck: false,
      "aria-invalid": error ? "true" : undefined, "aria-describedby": error ? "wf-node-id-error" : undefined,
      onChange: (event) => setText(event.target.value.trim()),
      onBlur: apply,
      onKeyDown: (event) => {
        if (event.key === "Enter") apply();
        if (event.key === "Escape") setText(props.id);
      },
    }),
    error ? h("small", { className: "form-error", id: "wf-node-id-error", role: "alert" }, error) : null);
}

function unknownKeys(config, properties) {
  const other = {};
  for (const key of Object.keys(config)) if (!(key in properties)) other[key] = config[key];
  return other;
}

export function NodeForm(props) {
  const node = props.node;
  const nodeType = props.nodeType;
  const config = node.config && typeof node.config === "object" && !Array.isArray(node.config) ? node.config : {};
  const schema = (nodeType && nodeType.schema) || {};
  const properties = schema.properties || {};
  const other = unknownKeys(config, properties);
  const hasOther = Object.keys(other).length > 0;
  const context = Object.assign({}, props.context, { nodeId: node.id });

  const setOther = (value) => {
    if (value !== undefined && (typeof value !== "object" || Array.isArray(value) || value === null)) return;
    const next = {};
    for (const key of Object.keys(config)) if (key in properties) next[key] = config[key];
    props.onConfig(Object.assign(next, value || {}), "other");
  };

  return h("section", { className: "node-form", "aria-label": interpolate(t("Node “%(id)s”"), { id: node.id }, true) },
    h("header", null,
      h("h2", null, nodeType ? nodeType.label : node.type),
      h("p", { className: "muted" }, nodeType ? nodeType.description
        : interpolate(t("Unknown node type “%(type)s”."), { type: node.type }, true))),
    props.problems.length ? h("ul", { className: "form-problems", role: "alert" },
      props.problems.map((message, index) => h("li", { key: index }, message))) : null,
    h(RenameField, { id: node.id, readOnly: props.readOnly, onRename: props.onRename }),
    h("div", { className: "field field-entry" },
      props.entry
        ? h("p", { className: "entry-note" }, "▶ " + t("The run starts at this node (the entry)."))
        : h("button", { type: "button", className: "make-entry", disabled: props.readOnly, onClick: props.onEntry },
          "▶ " + t("Start the run here"))),
    nodeType
      ? h(ObjectFields, {
        schema: schema, root: schema, value: config, required: schema.required || [], context: context,
        readOnly: props.readOnly, onChange: props.onConfig, onBlur: props.onBlur,
      })
      : h("div", { className: "field" },
        h("label", { htmlFor: "wf-config-json" }, t("Settings (JSON)")),
        h(JsonField, { id: "wf-config-json", name: "config", value: config, readOnly: props.readOnly, rows: 8,
          onChange: (value) => props.onConfig(value && typeof value === "object" ? value : {}, "config") })),
    nodeType && (hasOther || !Object.keys(properties).length && schema.additionalProperties !== false)
      ? h("div", { className: "field field-other" },
        h("label", { htmlFor: "wf-other-json" }, t("Other settings (JSON)")),
        h(JsonField, { id: "wf-other-json", name: "other", value: hasOther ? other : undefined, readOnly: props.readOnly, onChange: setOther }))
      : null,
    h("div", { className: "form-actions" },
      h("button", { type: "button", className: "danger delete-node", disabled: props.readOnly, onClick: props.onDelete },
        t("Delete node"))));
}
