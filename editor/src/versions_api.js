// Small helpers of the workflow list and the versions panel (versions task); the calls
// themselves go through ./api.js (config.urls by Django url name).
import { url } from "./api.js";

// The editor page of one workflow (/studio/workflows/<slug>/).
export function editorUrl(config, slug) {
  if (config.urls && config.urls["workflow-editor"]) return url(config, "workflow-editor", { slug });
  return "/studio/workflows/" + encodeURIComponent(slug) + "/";
}

// A link of the page config ("studio", "admin"), or where it usually is.
export function link(config, name, fallback) {
  return (config.urls && config.urls[name]) || fallback;
}

// A refusal's field errors ({field: ["…"]}) from an ApiError of ./api.js.
export function fieldErrors(exc) {
  return (exc && exc.detail && exc.detail.fields) || {};
}

export function language(config) {
  return (config && config.language) || document.documentElement.lang || undefined;
}

// A date-time written in the page's language ("2025年3月1日 14:05", "Mar 1, 2025, 2:05 PM").
export function formatTime(config, iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  try {
    return new Intl.DateTimeFormat(language(config), { dateStyle: "medium", timeStyle: "short" })
      .format(date);
  } catch (exc) {
    return date.toLocaleString();
  }
}
