// The editor's toolbar (name, version, undo/redo, layout, save) and palette of node types.
import { createElement as h } from "react";
import { t, interpolate } from "./i18n.js";
import { DRAG_TYPE } from "./canvas.js";

function versionState(version, workflow) {
  if (!version) return { key: "new", text: t("not saved yet") };
  const live = workflow.live_version === null || workflow.live_version === undefined
    ? version.live : version.number === workflow.live_version;
  if (live) return { key: "live", text: t("live") };
  if (version.published_at) return { key: "earlier", text: t("published before") };
  return { key: "draft", text: t("draft") };
}

function switchTheme() {
  const root = document.documentElement;
  const next = root.dataset.theme === "dark" ? "light" : "dark";
  root.dataset.theme = next;
  try {
    window.localStorage.setItem("openclaw-theme", next);
  } catch (failure) {
    // private mode: the choice lasts for this page only
  }
  return next;
}

export function Toolbar(props) {
  const config = props.config;
  const state = versionState(props.version, props.workflow);
  const canSave = config.can_change && props.workflow.can_change !== false && !props.busy;
  return h("header", { className: "toolbar wf-toolbar" },
    h("a", { className: "back", href: config.urls.workflows, title: t("All workflows") }, "← " + t("Workflows")),
    h("h1", { className: "wf-name", title: props.workflow.slug }, props.workflow.name || props.workflow.slug),
    h("span", { className: "version-badge version-" + state.key, id: "version-badge" },
      props.version ? interpolate(t("Version %(number)s"), { number: props.version.number }, true) + " · " : "",
      state.text),
    props.dirty ? h("span", { className: "dirty", title: t("Changes not saved yet") }, "● " + t("unsaved")) : null,
    h("span", { className: "group", role: "group", "aria-label": t("Edit") },
      h("button", { type: "button", id: "undo", onClick: props.onUndo, disabled: !props.canUndo, title: t("Undo (Ctrl+Z)") }, "↶ " + t("Undo")),
      h("button", { type: "button", id: "redo", onClick: props.onRedo, disabled: !props.canRedo, title: t("Redo (Ctrl+Shift+Z or Ctrl+Y)") }, "↷ " + t("Redo")),
      h("button", { type: "button", id: "auto-layout", onClick: props.onLayout, disabled: !config.can_change, title: t("Arrange the nodes from top to bottom") }, "⇅ " + t("Auto-layout"))),
    h("input", {
      type: "text", id: "version-note", className: "note", value: props.note, maxLength: 500,
      placeholder: t("What changed (optional note)"), "aria-label": t("Note for this version"),
      disabled: !canSave, onChange: (event) => props.onNote(event.target.value),
    }),
    h("button", { type: "button", id: "save-draft", disabled: !canSave, onClick: () => props.onSave(false), title: t("Save a new version without changing what runs") }, t("Save draft")),
    h("button", { type: "button", id: "save-publish", className: "primary", disabled: !canSave, onClick: () => props.onSave(true), title: t("Save a new version and make it the one new runs use") }, t("Save & publish")),
    h("a", { href: config.urls.studio, className: "studio-link" }, t("Studio")),
    h("nav", { className: "lang", "aria-label": t("Language") },
      h("a", { href: "?lang=en", lang: "en", "aria-current": config.language === "en" ? "true" : undefined }, "EN"),
      h("a", { href: "?lang=zh-hans", lang: "zh-hans", "aria-current": config.language === "zh-hans" ? "true" : undefined }, "中文")),
    h("button", { type: "button", className: "icon", title: t("Light or dark"), "aria-label": t("Light or dark"), onClick: () => props.onTheme(switchTheme()) }, "◐"));
}

export function Palette(props) {
  return h("aside", { className: "palette", "aria-label": t("Node types") },
    h("h2", null, t("Node types")),
    h("p", { className: "hint" }, t("Drag a type onto the canvas, or click it to add it in the middle.")),
    h("ul", null, props.types.map((type) => h("li", { key: type.type },
      h("button", {
        type: "button", className: "palette-item", draggable: !props.readOnly, disabled: props.readOnly,
        "data-type": type.type, title: type.description || undefined,
        onDragStart: (event) => {
          event.dataTransfer.setData(DRAG_TYPE, type.type);
          event.dataTransfer.effectAllowed = "copy";
        },
        onClick: () => props.onAdd(type.type),
      },
      h("span", { className: "palette-label" }, type.label),
      h("span", { className: "palette-description" }, type.description))))));
}
