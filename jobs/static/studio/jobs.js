// The studio's Jobs page: polls api/jobs/ every two seconds and draws the tables;
// cancel / retry post to the row's action. Text goes through Django's JS catalogue.
(function () {
  "use strict";
  const root = document.getElementById("jobs");
  const api = root.dataset.api;
  const csrf = document.querySelector("[name=csrfmiddlewaretoken]").value;
  const t = (s) => (window.gettext ? window.gettext(s) : s);
  const format = (text, args) => (window.interpolate ? window.interpolate(text, args)
    : text.replace(/%s/g, () => String(args.shift())));
  const number = new Intl.NumberFormat(document.documentElement.lang || undefined);

  // "1 h 5 min", "3 min 20 s", "42 s": a time left, in the page's language
  function duration(seconds) {
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    if (h) return format(t("%s h %s min"), [number.format(h), number.format(m)]);
    if (m) return format(t("%s min %s s"), [number.format(m), number.format(s)]);
    return format(t("%s s"), [number.format(s)]);
  }

  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "–" : String(text);
    return td;
  }

  function bar(fraction, label) {
    const td = document.createElement("td");
    const meter = document.createElement("progress");
    meter.max = 1;
    meter.value = Math.max(0, Math.min(1, fraction));
    td.append(meter, " ", label);
    return td;
  }

  function button(label, url) {
    const td = document.createElement("td");
    if (!url) return td;
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.addEventListener("click", async () => {
      b.disabled = true;
      const r = await fetch(url, { method: "POST", headers: { "X-CSRFToken": csrf } });
      if (!r.ok) {
        const body = await r.json().catch(() => ({}));
        alert((body.error && body.error.message) ||
          format(t("The server answered with status %s."), [r.status]));
      }
      refresh();
    });
    td.append(b);
    return td;
  }

  function batchRow(job) {
    const tr = document.createElement("tr");
    tr.dataset.id = job.id;
    const processed = job.done + job.failed;
    const label = number.format(job.done) + "/" + number.format(job.total) +
      (job.failed ? " · " + format(t("%s failed"), [number.format(job.failed)]) : "");
    tr.append(cell(job.id), cell(job.model), cell(job.status_label || job.status),
      bar(job.total ? processed / job.total : 0, label),
      cell(job.rate === null ? null : format(t("%s lines/s"), [number.format(job.rate)])),
      cell(job.eta_s === null ? null : duration(job.eta_s)),
      job.finished
        ? button(t("Retry failed"), job.retryable ? api + "batch/" + job.id + "/retry/" : null)
        : button(t("Cancel"), api + "batch/" + job.id + "/cancel/"));
    return tr;
  }

  // The training loss per step as a small line chart (SVG, drawn here: no library).
  function lossChart(points) {
    const td = document.createElement("td");
    const loss = points.length ? points[points.length - 1][1] : null;
    if (points.length > 1) {
      const ns = "http://www.w3.org/2000/svg";
      const w = 160, h = 36;
      const steps = points.map((p) => p[0]), values = points.map((p) => p[1]);
      const x0 = Math.min(...steps), x1 = Math.max(...steps);
      const y0 = Math.min(...values), y1 = Math.max(...values);
      const x = (v) => ((v - x0) / ((x1 - x0) || 1)) * (w - 2) + 1;
      const y = (v) => h - 1 - ((v - y0) / ((y1 - y0) || 1)) * (h - 2);
      const svg = document.createElementNS(ns, "svg");
      svg.setAttribute("viewBox", "0 0 " + w + " " + h);
      svg.setAttribute("class", "loss-chart");
      svg.setAttribute("role", "img");
      svg.setAttribute("aria-label", t("Training loss per step"));
      const line = document.createElementNS(ns, "polyline");
      line.setAttribute("points", points.map((p) => x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1)).join(" "));
      svg.append(line);
      td.append(svg, " ");
    }
    td.append(loss === null ? "–" : loss.toFixed(3));
    return td;
  }

  function tuneRow(job) {
    const tr = document.createElement("tr");
    tr.dataset.id = job.id;
    tr.append(cell("#" + job.id), cell(job.base), cell(job.status_label || job.status),
      bar(job.progress, number.format(job.step) + "/" + number.format(job.total_steps)),
      lossChart(job.losses || []),
      cell(job.result || job.error || null),
      button(t("Cancel"), job.finished ? null : api + "finetune/" + job.id + "/cancel/"));
    return tr;
  }

  function fill(id, rows, draw) {
    const body = document.getElementById(id);
    body.replaceChildren(...(rows.length ? rows.map(draw) : [(() => {
      const tr = document.createElement("tr");
      const td = cell(t("No jobs yet."));
      td.colSpan = 7;
      tr.append(td);
      return tr;
    })()]));
  }

  async function refresh() {
    const r = await fetch(api, { headers: { Accept: "application/json" } });
    if (!r.ok) return;
    const data = await r.json();
    fill("batch-rows", data.batches, batchRow);
    fill("tune-rows", data.finetunes, tuneRow);
  }

  refresh();
  setInterval(refresh, 2000);
})();
