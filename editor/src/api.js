// The editor's calls to the studio's JSON API (session cookie + X-CSRFToken).
//
// config.urls holds the API's urls by their Django url names (chat/studio_urls.py);
// those of one workflow, version or conversation are templates with "{slug}",
// "{number}" and "{id}" in them: url(config, "workflow-versions", {slug: "triage"}).
import { t } from "./i18n.js";

export function url(config, name, params) {
  let address = config.urls[name];
  if (address === undefined) throw new Error("no url named " + name);
  for (const key of Object.keys(params || {})) {
    address = address.split("{" + key + "}").join(encodeURIComponent(String(params[key])));
  }
  return address;
}

// A refusal of the API: {error: {code, message, ...}} with the HTTP status.
export class ApiError extends Error {
  constructor(status, error) {
    super((error && error.message) || t("The server did not answer as expected."));
    this.status = status;
    this.code = (error && error.code) || "http_" + status;
    this.detail = error || {};
  }
}

async function call(config, address, options) {
  let response;
  try {
    response = await fetch(address, Object.assign({ credentials: "same-origin" }, options));
  } catch (failure) {
    throw new ApiError(0, { code: "network", message: t("The server cannot be reached.") });
  }
  let body = null;
  try {
    body = await response.json();
  } catch (failure) {
    body = null;
  }
  if (!response.ok) throw new ApiError(response.status, body && body.error);
  return body;
}

export function getJSON(config, address) {
  return call(config, address, { headers: { Accept: "application/json" } });
}

export function postJSON(config, address, payload) {
  return call(config, address, {
    method: "POST",
    headers: {
      Accept: "application/json",
      "Content-Type": "application/json",
      "X-CSRFToken": config.csrf,
    },
    body: JSON.stringify(payload === undefined ? {} : payload),
  });
}
