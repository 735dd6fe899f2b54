// The fields of a node's form, one per config key, chosen from the key's JSON schema:
// text, long text ("format": "textarea"), numbers with their bounds, yes/no, choices
// ("enum"), a node of this workflow ("x-node-ref"), a workflow ("x-workflow-ref"), a
// model ("x-model-ref"), tools ("x-tool-ref"), rows of objects, else JSON.
//
// A field gets the key's `value` (undefined: not set) and calls onChange(value), with
// undefined to leave the key out of the config.
import { createElement as h, useEffect, useRef, useState } from "react";
import { t, interpolate } from "./i18n.js";
import { resolve, typeName } from "./graph.js";

export function widgetOf(schema, root) {
  const items = resolve(schema.items, root);
  if (schema["x-node-ref"]) return "node";
  if (schema["x-workflow-ref"]) return "workflow";
  if (schema["x-model-ref"]) return "model";
  if (schema["x-tool-ref"] || items["x-tool-ref"]) return "tools";
  if (Array.isArray(schema.enum)) return "enum";
  const type = typeName(schema);
  if (type === "string") return schema.format === "textarea" ? "textarea" : "text";
  if (type === "integer" || type === "number") return "number";
  if (type === "boolean") return "boolean";
  if (type === "array" && items.properties) return "rows";
  return "json";
}

let serial = 0;
function useFieldId() {
  const ref = useRef(null);
  if (ref.current === null) ref.current = "wf-field-" + (++serial);
  return ref.current;
}

// One labelled field: the label (the schema's title, else the key), the widget, the
// schema's description as a hint.
export function Field(props) {
  const schema = resolve(props.schema, props.root);
  const widget = widgetOf(schema, props.root);
  const id = useFieldId();
  const label = schema.title || props.name;
  const hint = schema.description ? h("small", { className: "hint", id: id + "-hint" }, schema.description) : null;
  const common = Object.assign({}, props, { schema: schema, id: id, label: label, describedBy: hint ? id + "-hint" : undefined });
  const control = h(WIDGETS[widget], common);
  if (widget === "boolean") {
    return h("div", { className: "field field-boolean", "data-key": props.name }, control, hint);
  }
  const group = widget === "tools" || widget === "rows";
  return h(group ? "fieldset" : "div", { className: "field field-" + widget, "data-key": props.name },
    group ? h("legend", null, label, props.required ? " *" : "")
      : h("label", { htmlFor: id }, label, props.required ? " *" : ""),
    control, hint);
}

function attributes(props, extra) {
  return Object.assign({
    id: props.id, name: props.name, disabled: props.readOnly, "aria-describedby": props.describedBy,
    onBlur: props.onBlur,
  }, extra);
}

function TextField(props) {
  const placeholder = typeof props.schema.default === "string" ? props.schema.default : undefined;
  const examples = Array.isArray(props.schema.examples) ? props.schema.examples : [];
  const input = h("input", attributes(props, {
    type: "text", value: typeof props.value === "string" ? props.value : props.value === undefined ? "" : String(props.value),
    placeholder: placeholder, maxLength: props.schema.maxLength, list: examples.length ? props.id + "-examples" : undefined,
    onChange: (event) => props.onChange(event.target.value === "" ? undefined : event.target.value),
  }));
  if (!examples.length) return input;
  return h("span", { className: "model-field" }, input,
    h("datalist", { id: props.id + "-examples" }, examples.map((item) => h("option", { key: String(item), value: String(item) }))));
}

function TextareaField(props) {
  return h("textarea", attributes(props, {
    rows: 4, value: typeof props.value === "string" ? props.value : "",
    placeholder: typeof props.schema.default === "string" ? props.schema.default : undefined,
    onChange: (event) => props.onChange(event.target.value === "" ? undefined : event.target.value),
  }));
}

function NumberField(props) {
  const schema = props.schema;
  const integer = typeName(schema) === "integer";
  return h("input", attributes(props, {
    type: "number", value: typeof props.value === "number" ? props.value : "",
    min: schema.minimum !== undefined ? schema.minimum : schema.exclusiveMinimum,
    max: schema.maximum !== undefined ? schema.maximum : schema.exclusiveMaximum, step: integer ? 1 : "any",
    placeholder: schema.default !== undefined ? String(schema.default) : undefined,
    onChange: (event) => {
      const text = event.target.value;
      props.onChange(text === "" || isNaN(Number(text)) ? undefined : Number(text));
    },
  }));
}

function BooleanField(props) {
  const fallback = typeof props.schema.default === "boolean" ? props.schema.default : false;
  return h("label", { className: "check", htmlFor: props.id },
    h("input", attributes(props, {
      type: "checkbox", checked: typeof props.value === "boolean" ? props.value : fallback,
      onChange: (event) => props.onChange(event.target.checked),
    })),
    " ", props.label);
}

function choice(props, options) {
  const value = props.value === undefined || props.value === null ? "" : String(props.value);
  const known = options.some((option) => option.value === value);
  const empty = props.schema.default !== undefined
    ? interpolate(t("(default: %(value)s)"), { value: String(props.schema.default) }, true) : t("(none)");
  return h("select", attributes(props, {
    value: value,
    onChange: (event) => {
      const picked = options.find((option) => option.value === event.target.value);
      props.onChange(picked ? picked.raw : undefined);
    },
  }),
  h("option", { value: "" }, empty),
  known || value === "" ? null : h("option", { value: value }, interpolate(t("%(value)s (unknown)"), { value: value }, true)),
  options.map((option) => h("option", { key: option.value, value: option.value }, option.label)));
}

function EnumField(props) {
  return choice(props, props.schema.enum.map((item) => ({ value: String(item), raw: item, label: String(item) })));
}

function NodeField(props) {
  return choice(props, props.context.nodeIds.filter((id) => id !== props.context.nodeId)
    .map((id) => ({ value: id, raw: id, label: id })));
}

function WorkflowField(props) {
  return choice(props, props.context.workflows.map((workflow) => ({
    value: workflow.slug, raw: workflow.slug, label: workflow.name ? workflow.name + " (" + workflow.slug + ")" : workflow.slug,
  })));
}

function ModelField(props) {
  const list = props.id + "-models";
  return h("span", { className: "model-field" },
    h("input", attributes(props, {
      type: "text", list: list, value: typeof props.value === "string" ? props.value : "",
      placeholder: t("the run's model (routed)"),
      onChange: (event) => props.onChange(event.target.value === "" ? undefined : event.target.value),
    })),
    h("datalist", { id: list }, props.context.models.map((name) => h("option", { key: name, value: name }))));
}

function ToolsField(props) {
  const chosen = Array.isArray(props.value) ? props.value : [];
  const tools = props.context.tools.slice();
  for (const name of chosen) if (!tools.some((tool) => tool.name === name)) tools.push({ name: name, description: t("(not installed)") });
  if (!tools.length) return h("p", { className: "muted" }, t("No tools are installed."));
  const toggle = (name, on) => {
    const next = on ? chosen.concat([name]) : chosen.filter((item) => item !== name);
    props.onChange(next.length ? next : undefined);
  };
  return h("ul", { className: "tool-list", "aria-describedby": props.describedBy },
    tools.map((tool) => h("li", { key: tool.name },
      h("label", { className: "check", title: tool.description || undefined },
        h("input", {
          type: "checkbox", name: props.name, value: tool.name, disabled: props.readOnly,
          checked: chosen.indexOf(tool.name) !== -1, onChange: (event) => toggle(tool.name, event.target.checked),
        }),
        " ", h("code", null, tool.name),
        tool.description ? h("span", { className: "muted" }, " — " + tool.description) : null))));
}

function RowsField(props) {
  const rows = Array.isArray(props.value) ? props.value : [];
  const items = resolve(props.schema.items, props.root);
  const required = items.required || [];
  const change = (index, row) => props.onChange(rows.map((item, at) => (at === index ? row : item)));
  const remove = (index) => {
    const next = rows.filter((item, at) => at !== index);
    props.onChange(next.length ? next : undefined);
  };
  return h("div", { className: "rows" },
    rows.map((row, index) => h("div", { className: "row", key: index },
      h("div", { className: "row-head" },
        h("span", null, interpolate(t("%(what)s %(number)s"), { what: props.label, number: index + 1 }, true)),
        h("button", { type: "button", className: "link", disabled: props.readOnly, onClick: () => remove(index) }, t("Remove"))),
      h(ObjectFields, {
        schema: items, root: props.root, value: row && typeof row === "object" ? row : {}, required: required,
        context: props.context, readOnly: props.readOnly, onChange: (next) => change(index, next),
      }))),
    h("button", { type: "button", disabled: props.readOnly, onClick: () => props.onChange(rows.concat([{}])) },
      "+ " + t("Add")));
}

// The fields of an object's known keys; keys the schema does not name are kept.
export function ObjectFields(props) {
  const properties = props.schema.properties || {};
  const value = props.value;
  const set = (key, next) => {
    const copy = Object.assign({}, value);
    if (next === undefined) delete copy[key];
    else copy[key] = next;
    props.onChange(copy, key);
  };
  return h("div", { className: "fields" }, Object.keys(properties).map((key) => h(Field, {
    key: key, name: key, schema: properties[key], root: props.root, value: value[key],
    required: (props.required || []).indexOf(key) !== -1, context: props.context, readOnly: props.readOnly,
    onChange: (next) => set(key, next), onBlur: props.onBlur,
  })));
}

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

// Any other value as JSON text; text that does not parse is shown with the reason and
// changes nothing until it does.
export function JsonField(props) {
  const shown = (value) => (value === undefined ? "" : JSON.stringify(value, null, 2));
  const [text, setText] = useState(shown(props.value));
  const [error, setError] = useState(null);
  useEffect(() => {
    let current;
    try {
      current = text.trim() === "" ? undefined : JSON.parse(text);
    } catch (failure) {
      return; // being typed: an undo elsewhere does not overwrite it
    }
    if (!same(current, props.value)) {
      setText(shown(props.value));
      setError(null);
    }
  }, [props.value]);
  const change = (event) => {
    const next = event.target.value;
    setText(next);
    if (next.trim() === "") {
      setError(null);
      props.onChange(undefined);
      return;
    }
    try {
      const parsed = JSON.parse(next);
      setError(null);
      props.onChange(parsed);
    } catch (failure) {
      setError(interpolate(t("Not valid JSON: %(reason)s"), { reason: failure.message }, true));
    }
  };
  return h("span", { className: "json-field" },
    h("textarea", attributes(props, {
      className: "json" + (error ? " invalid" : ""), rows: props.rows || 4, value: text, spellCheck: false,
      onChange: change, "aria-invalid": error ? "true" : undefined,
    })),
    error ? h("small", { className: "form-error", role: "alert" }, error) : null);
}

const WIDGETS = {
  text: TextField, textarea: TextareaField, number: NumberField, boolean: BooleanField,
  enum: EnumField, node: NodeField, workflow: WorkflowField, model: ModelField,
  tools: ToolsField, rows: RowsField, json: JsonField,
};
