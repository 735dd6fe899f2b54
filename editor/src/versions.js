// The editor's versions panel, written by the versions task.
//   h(VersionsPanel, {
//     config, slug,
//     current,            // number of the version open on the canvas
//     refresh,            // a counter main.js bumps after every save (reload the list)
//     onOpen,             // (version) => void: load {number, definition, layout} on the canvas
//     onPublished,        // (version) => void: a publish / roll back made `version` live
//   })
import { Fragment, createElement as h, useCallback, useEffect, useState } from "react";
import { interpolate, t } from "./i18n.js";
import { getJSON, postJSON, url } from "./api.js";
import { formatTime } from "./versions_api.js";
import "./versions.css";

const VALUE_MAX = 400; // characters of a changed value shown before it is cut

function versionName(number) {
  return interpolate(t("Version %(number)s"), { number }, true);
}

function Badge({ kind, children }) {
  return h("span", { className: `wf-badge wf-badge-${kind}` }, children);
}

// A changed field's value, readable: text as it is, anything else as compact JSON.
function shownValue(value) {
  if (value === undefined || value === null) return null;
  const text = typeof value === "string" ? value : JSON.stringify(value, null, 1)
    .replace(/\n\s*/g, " ");
  return text.length > VALUE_MAX ? `${text.slice(0, VALUE_MAX)}…` : text;
}

function Value({ value, kind }) {
  const text = shownValue(value);
  if (text === null) return h("span", { className: `diff-value diff-${kind} diff-none` }, t("(not set)"));
  return h(kind === "a" ? "del" : "ins", { className: `diff-value diff-${kind}` }, text);
}

function NodeItem({ node }) {
  return h(Fragment, null, h("code", null, node.id), " ",
    h("span", { className: "muted" }, interpolate(t("(%(type)s)"), { type: node.type }, true)));
}

// A changed node: each field that differs, its value in a → its value in b.
function ChangedNode({ node }) {
  return h(Fragment, null, h(NodeItem, { node }),
    h("dl", { className: "diff-fields" }, (node.fields || []).map((field) =>
      h("div", { key: field.key, className: "diff-field" },
        h("dt", null, field.key),
        h("dd", null, h(Value, { value: field.a, kind: "a" }),
          h("span", { className: "diff-arrow" }, " → "), h(Value, { value: field.b, kind: "b" }))))));
}

function DiffSection({ title, what, kind, items, render }) {
  if (!items || !items.length) return null;
  return h("div", { className: `diff-section diff-section-${kind} diff-${what}-${kind}` },
    h("h4", null, title, " ", h("span", { className: "muted" }, `(${items.length})`)),
    h("ul", null, items.map((item, index) => h("li", { key: index, className: `diff-${kind}` },
      render(item)))));
}

function edgeText(edge) {
  return h(Fragment, null, h("code", null, edge.source), " → ", h("code", null, edge.target));
}

export function DiffView({ diff }) {
  const nodes = diff.nodes || {};
  const edges = diff.edges || {};
  const empty = !diff.entry && !["added", "removed", "changed"].some((k) => (nodes[k] || []).length)
    && !["added", "removed"].some((k) => (edges[k] || []).length);
  return h("section", { className: "version-diff", "aria-live": "polite" },
    h("h3", null, interpolate(t("Changes from version %(a)s to version %(b)s"),
      { a: diff.a, b: diff.b }, true)),
    empty ? h("p", { className: "muted diff-empty" }, t("No differences.")) : null,
    diff.entry ? h("p", { className: "diff-entry" }, h("strong", null, t("Entry node:")), " ",
      h(Value, { value: diff.entry.a, kind: "a" }), " → ", h(Value, { value: diff.entry.b, kind: "b" }))
      : null,
    h(DiffSection, { title: t("Nodes added"), what: "nodes", kind: "added", items: nodes.added,
      render: (node) => h(NodeItem, { node }) }),
    h(DiffSection, { title: t("Nodes removed"), what: "nodes", kind: "removed", items: nodes.removed,
      render: (node) => h(NodeItem, { node }) }),
    h(DiffSection, { title: t("Nodes changed"), what: "nodes", kind: "changed", items: nodes.changed,
      render: (node) => h(ChangedNode, { node }) }),
    h(DiffSection, { title: t("Connections added"), what: "edges", kind: "added", items: edges.added, render: edgeText }),
    h(DiffSection, { title: t("Connections removed"), what: "edges", kind: "removed", items: edges.removed,
      render: edgeText }));
}

function VersionRow({ config, version, latest, current, pick, onPick, busy, confirming,
  onOpen, onPublish, onConfirm, onCancel }) {
  const draft = !version.published_at;
  const canChange = Boolean(config.can_change);
  const locked = canChange ? undefined : t("You may not change this workflow.");
  let action = null;
  if (version.number === latest && draft) {
    action = h("button", { type: "button", className: "primary version-publish", disabled: !canChange || busy,
      title: locked, onClick: () => onPublish(version.number) }, t("Publish"));
  } else if (!version.live) {
    action = h("button", { type: "button", className: "version-rollback", disabled: !canChange || busy,
      title: locked, onClick: () => onConfirm(version.number) }, t("Roll back to this"));
  }

  return h("li", {
    className: `version-row${version.live ? " is-live" : ""}${current === version.number ? " is-open" : ""}`,
    "data-number": version.number,
  },
    h("div", { className: "version-pick" },
      h("input", { type: "radio", name: "diff-a", checked: pick.a === version.number,
        "aria-label": interpolate(t("Compare from version %(number)s"), { number: version.number }, true),
        title: t("Compare from"), onChange: () => onPick("a", version.number) }),
      h("input", { type: "radio", name: "diff-b", checked: pick.b === version.number,
        "aria-label": interpolate(t("Compare to version %(number)s"), { number: version.number }, true),
        title: t("Compare to"), onChange: () => onPick("b", version.number) })),
    h("div", { className: "version-main" },
      h("div", { className: "version-title" },
        h("strong", null, versionName(version.number)),
        version.live ? h(Badge, { kind: "live" }, t("live")) : null,
        draft ? h(Badge, { kind: "draft" }, t("draft")) : null,
        current === version.number ? h(Badge, { kind: "open" }, t("on the canvas")) : null),
      version.note ? h("div", { className: "version-note" }, version.note) : null,
      h("div", { className: "version-meta muted" },
        version.author ? interpolate(t("%(author)s, %(time)s"), {
          author: version.author, time: formatTime(config, version.created_at) }, true)
          : formatTime(config, version.created_at))),
    h("div", { className: "version-actions" },
      h("button", { type: "button", className: "version-open", disabled: busy,
        onClick: () => onOpen(version.number),
        "aria-label": interpolate(t("Open version %(number)s"), { number: version.number }, true),
      }, t("Open")),
      action),
    confirming ? h("div", { className: "version-confirm", role: "alertdialog",
      "aria-label": t("Roll back") },
      h("p", null, interpolate(t("Roll back to version %(number)s? Its definition is published as a new version %(next)s, and runs use it from then on."),
        { number: version.number, next: latest + 1 }, true)),
      h("div", { className: "form-actions" },
        h("button", { type: "button", className: "danger version-confirm-rollback", disabled: busy,
          onClick: () => onPublish(version.number) }, t("Roll back")),
        h("button", { type: "button", onClick: onCancel }, t("Cancel")))) : null);
}

export function VersionsPanel({ config, slug, current, refresh, onOpen, onPublished }) {
  const [versions, setVersions] = useState(null);
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const [confirming, setConfirming] = useState(null);
  const [pick, setPick] = useState({ a: null, b: null });
  const [diff, setDiff] = useState(null);

  const load = useCallback(async () => {
    try {
      const data = await getJSON(config, url(config, "workflow-versions", { slug }));
      const list = data.versions || [];
      setVersions(list);
      setError("");
      const numbers = list.map((v) => v.number);
      setPick((old) => ({
        a: numbers.includes(old.a) ? old.a : (numbers[1] || numbers[0] || null),
        b: numbers.includes(old.b) ? old.b : (numbers[0] || null),
      }));
    } catch (exc) {
      setError(exc.message);
    }
  }, [config, slug]);

  useEffect(() => { load(); }, [load, refresh]);

  async function open(number) {
    setBusy(true);
    try {
      const data = await getJSON(config, url(config, "workflow-version", { slug, number }));
      setError("");
      if (onOpen) onOpen(data.version);
    } catch (exc) {
      setError(exc.message);
    } finally {
      setBusy(false);
    }
  }

  async function publish(number) {
    setBusy(true);
    try {
      const data = await postJSON(config, url(config, "workflow-publish", { slug, number }), {});
      setConfirming(null);
      setError("");
      if (onPublished) onPublished(data.version);
      await load();
    } catch (exc) {
      setError(exc.message);
    } finally {
      setBusy(false);
    }
  }

  async function compare() {
    if (!pick.a || !pick.b) return;
    setBusy(true);
    try {
      const address = `${url(config, "workflow-diff", { slug })}?a=${pick.a}&b=${pick.b}`;
      setDiff(await getJSON(config, address));
      setError("");
    } catch (exc) {
      setError(exc.message);
    } finally {
      setBusy(false);
    }
  }

  const latest = versions && versions.length ? versions[0].number : 0;
  let list;
  if (versions === null) {
    list = error ? null : h("p", { className: "muted" }, t("Loading…"));
  } else if (!versions.length) {
    list = h("p", { className: "muted versions-empty" }, t("No saved versions yet."));
  } else {
    list = h(Fragment, null, versions.length > 1 ? h("div", { className: "version-legend muted", "aria-hidden": "true" },
      h("span", null, t("from")), h("span", null, t("to"))) : null,
    h("ol", { className: "version-list", "aria-label": t("Versions, newest first") },
      versions.map((version) => h(VersionRow, {
        key: version.number, config, version, latest, current, pick, busy,
        confirming: confirming === version.number,
        onPick: (side, number) => { setPick({ ...pick, [side]: number }); setDiff(null); },
        onOpen: open, onPublish: publish, onConfirm: setConfirming,
        onCancel: () => setConfirming(null),
      }))));
  }
  const comparable = pick.a && pick.b && pick.a !== pick.b;
  return h("section", { className: "versions-panel", "aria-label": t("Versions") },
    h("h2", null, t("Versions")),
    config.can_change ? null : h("p", { className: "muted versions-readonly" },
      t("You can look at the versions but not publish them.")),
    error ? h("p", { className: "form-error", role: "alert" }, error) : null,
    list,
    versions && versions.length > 1 ? h("div", { className: "versions-compare" },
      h("span", { className: "muted" }, t("Pick a version in the “from” column and one in the “to” column.")),
      h("button", { type: "button", className: "version-compare", disabled: !comparable || busy,
        onClick: compare },
      comparable ? interpolate(t("Compare version %(a)s with version %(b)s"), { a: pick.a, b: pick.b }, true)
        : t("Compare"))) : null,
    diff ? h(DiffView, { diff }) : null);
}
