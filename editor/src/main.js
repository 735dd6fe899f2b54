// The workflow editor's entry point (bundled into chat/static/studio/dist/editor.js by
// editor/build.mjs). The page (chat/templates/studio/workflows.html) holds its config
// in <script id="editor-config">: no slug → the list of workflows, a slug → the editor.
import "@xyflow/react/dist/style.css";
import "./editor.css";
import { createElement as h } from "react";
import { createRoot } from "react-dom/client";
import { Editor } from "./editor_app.js";
import { WorkflowList } from "./workflow_list.js";

function App(props) {
  return props.config.slug ? h(Editor, { config: props.config }) : h(WorkflowList, { config: props.config });
}

function start() {
  const source = document.getElementById("editor-config");
  const mount = document.getElementById("editor");
  if (!source || !mount) return;
  const config = JSON.parse(source.textContent);
  createRoot(mount).render(h(App, { config: config }));
  document.body.dataset.ready = "true";
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
