// The editor's list of workflows (/studio/workflows/), written by the versions task.
//   h(WorkflowList, { config })  — list, create, duplicate; links to /studio/workflows/<slug>/
import { Fragment, createElement as h, useCallback, useEffect, useState } from "react";
import { interpolate, t } from "./i18n.js";
import { getJSON, postJSON, url } from "./api.js";
import { editorUrl, fieldErrors, formatTime, link } from "./versions_api.js";
import "./workflow_list.css";

// "Support desk (EU)" → "support-desk-eu": a slug proposed while the user has not typed one.
function slugify(text) {
  return text.toLowerCase().normalize("NFKD").replace(/[\u0300-\u036f]/g, "")
    .replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 50);
}

function openEditor(config, slug) {
  window.location.assign(editorUrl(config, slug));
}

function FieldErrors({ id, errors }) {
  if (!errors || !errors.length) return null;
  return h("span", { className: "field-error", id, role: "alert" }, errors.join(" "));
}

// slug + name (+ where it is copied from): POST, then open the new workflow in the editor.
function WorkflowForm({ config, from, initial, submitLabel, onCancel, idPrefix }) {
  const [slug, setSlug] = useState(initial.slug);
  const [name, setName] = useState(initial.name);
  const [slugTouched, setSlugTouched] = useState(Boolean(initial.slug));
  const [errors, setErrors] = useState({});
  const [message, setMessage] = useState("");
  const [busy, setBusy] = useState(false);

  async function submit(event) {
    event.preventDefault();
    setBusy(true);
    setErrors({});
    setMessage("");
    const body = { slug: slug.trim(), name: name.trim() };
    if (from) body.from = from;
    try {
      const data = await postJSON(config, url(config, "workflows-api"), body);
      openEditor(config, (data.workflow && data.workflow.slug) || body.slug);
    } catch (exc) {
      const fields = {};
      for (const [key, messages] of Object.entries(fieldErrors(exc))) {
        const shown = key.startsWith("name_") ? "name" : key; // a translated field: name_en
        fields[shown] = [...(fields[shown] || []), ...messages];
      }
      setErrors(fields);
      // errors of fields without an input here (name_en, __all__…) are said below the form
      const others = Object.keys(fields).filter((key) => key !== "slug" && key !== "name")
        .map((key) => fields[key].join(" "));
      if (others.length || !fields.slug && !fields.name) {
        setMessage([exc.message, ...others].join(" "));
      }
      setBusy(false);
    }
  }

  const field = (key, label, value, onChange, extra) => {
    const id = `${idPrefix}-${key}`;
    const bad = errors[key] && errors[key].length;
    return h("label", { className: "field", htmlFor: id },
      h("span", { className: "field-label" }, label),
      h("input", {
        id, name: key, value, required: true, maxLength: key === "slug" ? 50 : 100,
        onChange: (event) => onChange(event.target.value),
        "aria-invalid": bad ? "true" : undefined,
        "aria-describedby": bad ? `${id}-error` : undefined,
        ...extra,
      }),
      h(FieldErrors, { id: `${id}-error`, errors: errors[key] }));
  };

  return h("form", { className: "workflow-form", onSubmit: submit, noValidate: true },
    field("name", t("Name"), name, (value) => {
      setName(value);
      if (!slugTouched) setSlug(slugify(value));
    }, { placeholder: t("Support desk") }),
    field("slug", t("Slug"), slug, (value) => {
      setSlug(value);
      setSlugTouched(true);
    }, { placeholder: t("support-desk"), pattern: "[-a-zA-Z0-9_]+", spellCheck: false }),
    h("div", { className: "form-actions" },
      h("button", { type: "submit", className: "primary", disabled: busy }, submitLabel),
      onCancel ? h("button", { type: "button", onClick: onCancel }, t("Cancel")) : null),
    message ? h("p", { className: "form-error", role: "alert" }, message) : null);
}

function Badge({ kind, children }) {
  return h("span", { className: `wf-badge wf-badge-${kind}` }, children);
}

function versionText(number) {
  return number ? interpolate(t("v%(number)s"), { number }, true) : "—";
}

function WorkflowRow({ config, workflow, duplicating, onDuplicate, onCancel }) {
  const href = editorUrl(config, workflow.slug);
  const draft = workflow.latest_version && workflow.latest_version !== workflow.live_version;
  const row = h("tr", { "data-slug": workflow.slug },
    h("td", { className: "wl-name" },
      h("a", { href }, workflow.name || workflow.slug),
      workflow.is_default ? h(Badge, { kind: "default" }, t("default")) : null,
      workflow.enabled === false ? h(Badge, { kind: "disabled" }, t("disabled")) : null,
      workflow.description ? h("div", { className: "muted wl-description" }, workflow.description) : null),
    h("td", null, h("code", null, workflow.slug)),
    h("td", { className: "num" }, workflow.live_version
      ? h(Badge, { kind: "live" }, versionText(workflow.live_version)) : "—"),
    h("td", { className: "num" }, versionText(workflow.latest_version),
      draft ? h(Badge, { kind: "draft" }, t("draft")) : null),
    h("td", { className: "num" }, workflow.nodes),
    h("td", null, h("time", { dateTime: workflow.updated_at, title: workflow.updated_at },
      formatTime(config, workflow.updated_at))),
    h("td", { className: "wl-actions" },
      config.can_add ? h("button", {
        type: "button", className: "wl-duplicate", onClick: onDuplicate,
        "aria-expanded": duplicating ? "true" : "false",
        "aria-label": interpolate(t("Duplicate %(name)s"), { name: workflow.name || workflow.slug }, true),
      }, t("Duplicate")) : null));
  if (!duplicating) return row;
  const copy = h("tr", { className: "wl-duplicate-row" },
    h("td", { colSpan: 7 },
      h("p", { className: "muted" },
        interpolate(t("A new workflow with a copy of the latest version of “%(name)s”:"),
          { name: workflow.name || workflow.slug }, true)),
      h(WorkflowForm, {
        config, from: workflow.slug, idPrefix: `dup-${workflow.slug}`,
        initial: { slug: slugify(`${workflow.slug}-copy`),
          name: interpolate(t("%(name)s (copy)"), { name: workflow.name || workflow.slug }, true) },
        submitLabel: t("Duplicate"), onCancel,
      })));
  return h(Fragment, null, row, copy);
}

export function WorkflowList({ config }) {
  const [workflows, setWorkflows] = useState(null);
  const [error, setError] = useState("");
  const [creating, setCreating] = useState(false);
  const [duplicating, setDuplicating] = useState(null);

  const load = useCallback(async () => {
    try {
      const data = await getJSON(config, url(config, "workflows-api"));
      setWorkflows(data.workflows || []);
      setError("");
    } catch (exc) {
      setError(exc.message);
      setWorkflows((current) => current || []);
    }
  }, [config]);

  useEffect(() => { load(); }, [load]);

  const header = h("header", { className: "wl-header" },
    h("h1", null, t("Workflows")),
    h("nav", { className: "wl-links", "aria-label": t("Elsewhere") },
      h("a", { href: link(config, "studio", "/studio/") }, t("Studio")),
      h("a", { href: link(config, "admin", "/admin/") }, t("Admin"))),
    config.can_add ? h("button", {
      type: "button", className: "primary wl-new", "aria-expanded": creating ? "true" : "false",
      onClick: () => setCreating(!creating),
    }, t("New workflow")) : null);

  const create = creating ? h("section", { className: "wl-create", "aria-label": t("New workflow") },
    h("h2", null, t("New workflow")),
    h("p", { className: "muted" }, t("It starts with one model step; open it to add more.")),
    h(WorkflowForm, {
      config, idPrefix: "new", initial: { slug: "", name: "" }, submitLabel: t("Create"),
      onCancel: () => setCreating(false),
    })) : null;

  let body;
  if (workflows === null) {
    body = h("p", { className: "muted wl-loading" }, t("Loading…"));
  } else if (!workflows.length) {
    body = h("div", { className: "wl-empty" },
      h("p", null, t("No workflows yet.")),
      h("p", { className: "muted" }, config.can_add
        ? t("Create the first one with “New workflow”.")
        : t("Ask an administrator to create one.")));
  } else {
    body = h("div", { className: "wl-table-wrap" }, h("table", { className: "wl-table" },
      h("thead", null, h("tr", null,
        h("th", { scope: "col" }, t("Name")),
        h("th", { scope: "col" }, t("Slug")),
        h("th", { scope: "col" }, t("Live version")),
        h("th", { scope: "col" }, t("Latest version")),
        h("th", { scope: "col" }, t("Nodes")),
        h("th", { scope: "col" }, t("Updated")),
        h("th", { scope: "col" }, h("span", { className: "sr-only" }, t("Actions"))))),
      h("tbody", null, workflows.map((workflow) => h(WorkflowRow, {
        key: workflow.slug, config, workflow,
        duplicating: duplicating === workflow.slug,
        onDuplicate: () => setDuplicating(duplicating === workflow.slug ? null : workflow.slug),
        onCancel: () => setDuplicating(null),
      })))));
  }

  return h("main", { className: "workflow-list" },
    header,
    error ? h("p", { className: "form-error", role: "alert" }, error) : null,
    create,
    body);
}
