// OpenClaw Studio: the conversation list, one or two chat panes (side by side), and
// the run panel (graph, timeline, route, memory, plugins, tokens). It speaks the
// websocket protocol of docs/websocket.md; every string goes through gettext.
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("studio-config").textContent);
  var t = window.gettext || function (s) { return s; };
  var tn = window.ngettext || function (one, many, n) { return n === 1 ? one : many; };
  var interpolate = window.interpolate || function (fmt, args) {
    return fmt.replace(/%s/g, function () { return String(args.shift()); });
  };
  var md = window.OpenClawMarkdown;
  // Numbers and times in the page's language (en / zh-hans).
  var locale = document.documentElement.lang || undefined;
  var number = new Intl.NumberFormat(locale);
  var tenths = new Intl.NumberFormat(locale, { maximumFractionDigits: 1 });
  var relative = new Intl.RelativeTimeFormat(locale, { numeric: "auto" });
  function ago(iso) {
    var seconds = (new Date(iso).getTime() - Date.now()) / 1000;
    var units = [["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]];
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(seconds) >= units[i][1] || units[i][0] === "second") {
        return relative.format(Math.round(seconds / units[i][1]), units[i][0]);
      }
    }
  }

  function $(id) { return document.getElementById(id); }
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") { node.textContent = attrs[key]; }
      else if (key === "html") { node.innerHTML = attrs[key]; }  // only md.render output
      else if (key.slice(0, 2) === "on") { node.addEventListener(key.slice(2), attrs[key]); }
      else { node.setAttribute(key, attrs[key]); }
    });
    (children || []).forEach(function (child) { if (child) { node.appendChild(child); } });
    return node;
  }
  function svg(tag, attrs) {
    var node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    return node;
  }
  function status(text) { $("status").textContent = text || ""; }
  function ms(value) {  // a duration in milliseconds, in the page's language
    return interpolate(t("%s ms"), [value < 10 ? tenths.format(value) : number.format(Math.round(value))]);
  }
  function api(path, options) {
    options = options || {};
    options.headers = Object.assign({ "X-CSRFToken": config.csrf, "Content-Type": "application/json" },
      options.headers || {});
    options.credentials = "same-origin";
    return fetch(path, options).catch(function () {
      throw new Error(t("The server cannot be reached."));
    }).then(function (response) {
      // the server's own message where it sent one (in the page's language), else the status
      var failed = new Error(interpolate(t("The server answered with status %s."), [response.status]));
      return response.json().catch(function () { throw failed; }).then(function (body) {
        if (!response.ok) { throw (body.error && body.error.message) ? new Error(body.error.message) : failed; }
        return body;
      });
    });
  }
  // The built-in conversation graph's steps, named in the page's language (an admin's
  // workflow names its own nodes).
  var STEPS = { recall: t("recall"), pre_process: t("pre-process"), route: t("route"),
    generate: t("generate"), post_process: t("post-process"), remember: t("remember") };
  // An agent node "<id>" is three graph nodes: "<id>", "<id>__review", "<id>__tools".
  var AGENT_PARTS = { review: t("approval"), tools: t("tool calls") };
  function stepName(id) {
    var parts = id.split("__");
    if (parts.length === 2 && Object.prototype.hasOwnProperty.call(AGENT_PARTS, parts[1])) {
      return stepName(parts[0]) + " · " + AGENT_PARTS[parts[1]];
    }
    return Object.prototype.hasOwnProperty.call(STEPS, id) ? STEPS[id] : id;
  }
  // What the built-in plugins did (a third-party plugin's own action is shown as it names it).
  var ACTIONS = { flag: t("flagged"), redact: t("redacted"), mask: t("masked"), block: t("blocked"),
    system_prompt: t("system prompt added"), refused: t("refused"), skipped: t("skipped") };
  function actionName(code) { return Object.prototype.hasOwnProperty.call(ACTIONS, code) ? ACTIONS[code] : code; }
  // The built-in plugins and what their details say, in the page's language; another
  // plugin's name and detail are shown as it gives them.
  var PLUGINS = { pii_redaction: t("PII redaction"), sensitive_words: t("sensitive-word filter"),
    system_prompt: t("system-prompt template") };
  var PII_KINDS = { email: t("email address"), iban: t("IBAN"), card: t("card number"),
    national_id: t("national ID"), ip_address: t("IP address"), phone: t("phone number") };
  var PROMPT_MODES = { prepend: t("prepended"), replace: t("replaced the system message"),
    if_missing: t("the conversation had no system message") };
  function known(table, code) { return Object.prototype.hasOwnProperty.call(table, code) ? table[code] : code; }
  function pluginDetail(detail) {
    if (!detail) { return ""; }
    if (typeof detail === "string") { return detail; }
    var parts = [];
    if (detail.kinds) {
      parts.push(Object.keys(detail.kinds).map(function (kind) {
        return known(PII_KINDS, kind) + " × " + number.format(detail.kinds[kind]);
      }).join(", "));
    }
    if (detail.matches != null) { parts.push(interpolate(tn("%s match", "%s matches", detail.matches), [number.format(detail.matches)])); }
    if (detail.mode) { parts.push(known(PROMPT_MODES, detail.mode)); }
    if (detail.direction === "output") { parts.push(t("in the answer")); }
    if (detail.error) { parts.push(String(detail.error)); }
    return parts.length ? parts.join(" · ") : JSON.stringify(detail);
  }

  // --- tool calls: a card per call inside the answer (chat.graph.agent's events) ------

  var TOOL_STATES = { running: t("running…"), waiting: t("waiting for approval"), ok: t("done"),
    error: t("failed"), rejected: t("rejected"), stopped: t("not finished") };
  function pretty(value) {  // arguments or a result: indented where it is a JSON object or list
    if (typeof value === "string") {
      try { var parsed = JSON.parse(value); } catch (e) { return value; }
      if (parsed === null || typeof parsed !== "object") { return value; }
      value = parsed;
    }
    return JSON.stringify(value, null, 2);
  }

  var Cards = {
    make: function (call) {  // call: {id, name, arguments, node, approval}; id may be unknown yet
      var card = el("div", { "class": "tool-card", role: "group",
        "aria-label": interpolate(t("Tool call: %s"), [call.name]) }, [
        el("div", { "class": "tool-head" }, [
          el("span", { "class": "spinner", "aria-hidden": "true" }),
          el("span", { "class": "tool-icon", "aria-hidden": "true", text: "⚙" }),
          el("code", { "class": "tool-name", text: call.name }),
          el("span", { "class": "tool-state" }),
          el("span", { "class": "tool-ms" })]),
        el("div", { "class": "tool-label", text: t("Arguments") }),
        el("pre", { "class": "tool-args", text: pretty(call.arguments || {}) })]);
      card.dataset.name = call.name;
      card.dataset.arguments = JSON.stringify(call.arguments || {});
      if (call.id) { card.dataset.call = call.id; }
      if (call.node) { card.dataset.node = call.node; }
      this.state(card, call.approval ? "waiting" : "running");
      return card;
    },
    state: function (card, state) {
      Object.keys(TOOL_STATES).forEach(function (name) { card.classList.remove(name); });
      card.classList.add(state);
      card.dataset.state = state;
      card.querySelector(".tool-state").textContent = TOOL_STATES[state];
    },
    // The card of a call: by its id where the event names it, else the first card of that
    // tool still open (a tool's calls end in the order they were made).
    find: function (root, call, name) {
      var cards = Array.prototype.slice.call(root.querySelectorAll(".tool-card"));
      return cards.filter(function (card) { return call && card.dataset.call === call; })[0] ||
        cards.filter(function (card) {
          return card.dataset.name === name && (card.dataset.state === "running" || card.dataset.state === "waiting") &&
            !(call && card.dataset.call);
        })[0] || null;
    },
    outcome: function (card, label, text, error) {  // the result, the error or why it was refused
      var old = card.querySelector(".tool-out");
      if (old) { old.remove(); }
      card.appendChild(el("div", { "class": "tool-out" + (error ? " error" : "") }, [
        el("div", { "class": "tool-label", text: label }), el("pre", { "class": "tool-result", text: text })]));
    },
    result: function (card, frame) {
      var failed = frame.status === "error";
      this.state(card, failed ? "error" : "ok");
      card.querySelector(".tool-ms").textContent = frame.duration_ms == null ? "" : ms(frame.duration_ms);
      this.outcome(card, failed ? t("Error") : t("Result"), pretty(frame.content || ""), failed);
    },
    edited: function (card, args) {
      card.dataset.arguments = JSON.stringify(args);
      card.querySelector(".tool-args").textContent = pretty(args);
      card.querySelector(".tool-label").textContent = t("Arguments (edited)");
    },
    // The message's text goes in parts between its cards, so both keep the order they came in.
    place: function (message, card) {
      var body = message.querySelector(".body");
      if (!message.classList.contains("with-tools")) {
        var raw = message.dataset.raw || "";
        body.innerHTML = "";
        if (raw) {
          var part = el("div", { "class": "part", html: md.render(raw) });
          part.dataset.raw = raw;
          body.appendChild(part);
        }
        message.classList.add("with-tools");
      }
      body.appendChild(card);
    },
    // Approve, edit the arguments (JSON in a text box), or reject (with a reason); the
    // buttons act for every call the run waits on and are disabled once one is used.
    review: function (card, decide) {
      var box = el("textarea", { "class": "tool-edit", rows: "4", spellcheck: "false",
        "aria-label": interpolate(t("Arguments of %s, as JSON"), [card.dataset.name]) });
      box.value = pretty(JSON.parse(card.dataset.arguments));
      box.hidden = true;
      var send = el("button", { type: "button", "class": "approve-edit", text: "✓ " + t("Approve with these arguments"),
        onclick: function () { decide("edit"); } });
      send.hidden = true;
      var old = card.querySelector(".tool-review");
      if (old) { old.remove(); }
      card.appendChild(el("div", { "class": "tool-review" }, [box, el("div", { "class": "actions" }, [
        el("button", { type: "button", "class": "approve", text: "✓ " + t("Approve"), onclick: function () { decide("approve"); } }),
        el("button", { type: "button", "class": "edit", text: "✎ " + t("Edit"), onclick: function () {
          box.hidden = send.hidden = !box.hidden;
          if (!box.hidden) { box.focus(); }
        } }),
        send,
        el("button", { type: "button", "class": "reject", text: "✕ " + t("Reject"), onclick: function () { decide("reject"); } }),
      ])]));
    },
    // An edit's arguments: each card's text box where it was opened, else as called; one
    // call's object as it is, several keyed by call id (chat.graph.agent.tool_decision).
    arguments: function (cards) {
      var edited = {};
      cards.forEach(function (card) {
        var box = card.querySelector(".tool-edit"), value;
        try { value = JSON.parse(box && !box.hidden ? box.value : card.dataset.arguments); } catch (e) { value = null; }
        if (value === null || typeof value !== "object" || Array.isArray(value)) {
          if (box) { box.setAttribute("aria-invalid", "true"); box.focus(); }
          throw new Error(interpolate(t("The arguments of %s must be a JSON object."), [card.dataset.name]));
        }
        if (box) { box.removeAttribute("aria-invalid"); }
        edited[card.dataset.call] = value;
      });
      return cards.length === 1 ? edited[cards[0].dataset.call] : edited;
    },
  };

  // --- the run panel --------------------------------------------------------------

  var Panel = {
    positions: {},
    draw: function () {
      var chosen = config.workflows.filter(function (w) { return w.name === $("workflow").value; })[0];
      var graph = (chosen || config.workflows[0]).graph, box = $("graph");
      var order = Panel.order(graph);
      var width = 280, nodeW = 150, nodeH = 30, gap = 16, x = 40;
      box.setAttribute("viewBox", "0 0 " + width + " " + (order.length * (nodeH + gap) + 4));
      box.innerHTML = "";
      var defs = svg("defs"), marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5",
        markerWidth: "6", markerHeight: "6", orient: "auto-start-reverse" });
      marker.appendChild(svg("path", { d: "M 0 0 L 10 5 L 0 10 z" }));
      defs.appendChild(marker);
      box.appendChild(defs);
      var pos = this.positions = {};
      order.forEach(function (id, i) { pos[id] = { x: x, y: 2 + i * (nodeH + gap), w: nodeW, h: nodeH }; });
      graph.edges.forEach(function (e) {
        var a = pos[e.source], b = pos[e.target];
        if (!a || !b) { return; }
        var d;
        if (b.y === a.y + nodeH + gap) {
          d = "M " + (a.x + nodeW / 2) + " " + (a.y + nodeH) + " L " + (b.x + nodeW / 2) + " " + b.y;
        } else {  // a skip (a condition ending the run early): a curve on the right
          var right = a.x + nodeW, bend = right + 30 + (b.y - a.y) / 12;
          d = "M " + right + " " + (a.y + nodeH / 2) + " C " + bend + " " + (a.y + nodeH / 2) + ", " +
            bend + " " + (b.y + nodeH / 2) + ", " + right + " " + (b.y + nodeH / 2);
        }
        box.appendChild(svg("path", { d: d, "class": "edge" + (e.conditional ? " conditional" : ""),
          "marker-end": "url(#arrow)" }));
      });
      order.forEach(function (id) {
        var p = pos[id], terminal = id === "__start__" || id === "__end__";
        var group = svg("g", { "class": "node" + (terminal ? " terminal" : ""), "data-node": id });
        group.appendChild(svg("rect", { x: p.x, y: p.y, width: p.w, height: p.h, rx: 8 }));
        var label = svg("text", { x: p.x + p.w / 2, y: p.y + p.h / 2 });
        label.textContent = terminal ? (id === "__start__" ? t("start") : t("end")) : stepName(id);
        group.appendChild(label);
        var time = svg("text", { "class": "time", x: p.x + p.w + 8, y: p.y + p.h / 2, "text-anchor": "start" });
        time.style.textAnchor = "start";
        group.appendChild(time);
        box.appendChild(group);
      });
    },
    // The nodes top to bottom in the order a run goes through them: a depth-first walk
    // from the start, each node placed before everything it leads to (the reverse of
    // the order the walk finishes them), so every arrow points down but a loop's way
    // back; a node's later branches are walked first, which keeps a branch together
    // under its node (an agent's review and tool steps right below the agent). Nodes
    // the start cannot reach come last, then the end.
    order: function (graph) {
      var next = {}, state = {}, finished = [];
      graph.edges.forEach(function (e) { (next[e.source] = next[e.source] || []).push(e.target); });
      var walk = function (id) {
        state[id] = "open";
        (next[id] || []).slice().reverse().forEach(function (to) {
          if (!state[to] && graph.nodes.indexOf(to) >= 0) { walk(to); }
        });
        state[id] = "done";
        finished.push(id);
      };
      walk("__start__");
      var order = finished.reverse().filter(function (id) { return id !== "__end__"; });
      graph.nodes.forEach(function (n) { if (!state[n] && n !== "__end__") { order.push(n); } });
      order.push("__end__");
      return order;
    },
    node: function (id) { return document.querySelector('#graph .node[data-node="' + id + '"]'); },
    reset: function () {
      document.querySelectorAll("#graph .node").forEach(function (n) {
        n.classList.remove("running", "done");
        n.querySelector(".time").textContent = "";
      });
      $("timeline").innerHTML = "";
      $("route").textContent = "—";
      $("plugins").innerHTML = "";
      $("plugins").appendChild(el("li", { "class": "muted", text: "—" }));
      $("usage").textContent = "—";
      this.entries = [];
    },
    handle: function (frame) {
      if (frame.type === "node") { this.onNode(frame); }
      else if (frame.type === "route") {
        var route = $("route");
        route.innerHTML = "";
        route.appendChild(el("div", {}, [el("strong", { text: t("Model") + ": " }), el("code", { text: frame.target || "—" })]));
        route.appendChild(el("div", { text: t("Rule") + ": " + (frame.rule || t("none (the model asked for)")) }));
        if (frame.fallbacks && frame.fallbacks.length) {
          route.appendChild(el("div", { text: t("Fallbacks") + ": " + frame.fallbacks.join(" → ") }));
        }
        (frame.explanation || []).forEach(function (line) { route.appendChild(el("div", { "class": "muted", text: String(line) })); });
      } else if (frame.type === "annotation" && frame.match) {
        // an annotation reply: the curated pair that answered, and how close it was
        $("route").innerHTML = "";
        $("route").appendChild(el("div", {}, [el("strong", { text: t("Curated answer") + ": " }),
          el("span", { text: frame.match.question })]));
        $("route").appendChild(el("div", { "class": "muted", text: interpolate(
          t("similarity %s (threshold %s)"), [frame.match.similarity.toFixed(2), frame.match.threshold.toFixed(2)]) }));
      } else if (frame.type === "memory") { this.onMemory(frame.hits || []); }
      else if (frame.type === "plugin") {
        var list = $("plugins");
        if (list.querySelector(".muted")) { list.innerHTML = ""; }
        var said = pluginDetail(frame.detail);
        list.appendChild(el("li", { text: known(PLUGINS, frame.plugin || "?") + " · " + actionName(frame.action || "") +
          (said ? " — " + said : "") }));
      } else if (frame.type === "usage") {
        $("usage").textContent = interpolate(t("%s prompt + %s completion = %s tokens"),
          [frame.prompt_tokens, frame.completion_tokens, frame.total_tokens]);
      } else if (frame.type === "tool_call") { this.onToolCall(frame); }
      else if (frame.type === "tool_result") { this.onToolResult(frame); }
      else if (frame.type === "approval") { this.onApproval(frame); }
      else if (frame.type === "done" && frame.latency_ms != null) {
        $("usage").appendChild(el("div", { "class": "muted", text: interpolate(
          t("first token %s ms · total %s ms"), [frame.ttft_ms == null ? "—" : number.format(Math.round(frame.ttft_ms)),
            number.format(Math.round(frame.latency_ms))]) }));
      }
    },
    onNode: function (frame) {
      var node = this.node(frame.node);
      if (!node) { return; }
      if (frame.phase === "start") { node.classList.add("running"); return; }
      node.classList.remove("running");
      node.classList.add("done");
      node.querySelector(".time").textContent = frame.ms == null ? "" : ms(frame.ms);
      this.entries.push({ label: stepName(frame.node), ms: frame.ms || 0 });
      this.drawTimeline();
    },
    // A tool call is a line of the timeline from the moment the model asks for it; its
    // result gives it its duration (a resumed run, after an approval, adds the line then).
    onToolCall: function (frame) {
      this.entries.push({ tool: true, call: frame.call_id || "", name: frame.name,
        state: frame.approval ? "waiting" : "running", ms: null });
      this.drawTimeline();
    },
    onToolResult: function (frame) {
      var entry = this.toolEntry(frame.call_id, frame.name, ["running", "waiting"]);
      if (!entry) {
        entry = { tool: true, call: frame.call_id || "", name: frame.name };
        this.entries.push(entry);
      }
      entry.state = frame.status === "error" ? "error" : "ok";
      entry.ms = frame.duration_ms == null ? null : frame.duration_ms;
      this.drawTimeline();
    },
    onApproval: function (frame) {
      this.entries.forEach(function (entry) {
        if (entry.tool && entry.state === "waiting") { entry.state = frame.action === "reject" ? "rejected" : "running"; }
      });
      this.drawTimeline();
    },
    toolEntry: function (call, name, states) {  // by the call's id, else its tool's first open line
      return this.entries.filter(function (entry) {
        return entry.tool && (call ? entry.call === call : entry.name === name && states.indexOf(entry.state) >= 0);
      })[0] || null;
    },
    drawTimeline: function () {
      var most = Math.max.apply(null, this.entries.map(function (x) { return x.ms || 0; }).concat([1]));
      var list = $("timeline");
      list.innerHTML = "";
      this.entries.forEach(function (x) {
        var bar = el("span", {});
        bar.style.width = x.ms == null ? "0" : Math.max(2, 100 * x.ms / most) + "%";
        var item = el("li", {}, [el("span", { text: x.tool ? "⚙ " + x.name : x.label }), el("span", { "class": "bar" }, [bar]),
          el("span", { "class": "muted", text: x.ms == null ? TOOL_STATES[x.state] : ms(x.ms) })]);
        if (x.tool) { item.className = "tool " + x.state; item.dataset.tool = x.name; }
        list.appendChild(item);
      });
    },
    onMemory: function (hits) {
      var list = $("memories");
      list.innerHTML = "";
      if (!hits.length) { list.appendChild(el("li", { "class": "muted", text: t("No memories recalled.") })); return; }
      hits.forEach(function (hit) {
        var item = el("li", {}, [el("span", { text: hit.text + " (" + Number(hit.score).toFixed(2) + ")" })]);
        item.appendChild(el("button", { type: "button", title: t("Forget this memory"), text: t("Delete"),
          onclick: function () {
            api("/studio/api/memories/" + hit.id + "/delete/", { method: "POST" })
              .then(function () { item.remove(); status(t("Memory deleted.")); })
              .catch(function (err) { status(err.message); });
          } }));
        list.appendChild(item);
      });
    },
  };

  // --- the quota bar: the signed-in user's budget (else tokens, else requests) -------

  var Quota = {
    units: [["month", 2592000], ["week", 604800], ["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]],
    periods: { minute: t("minute"), hour: t("hour"), day: t("day"), week: t("week"), month: t("month") },
    renews: function (seconds) {  // "in 3 hours", in the page's language
      for (var i = 0; i < this.units.length; i++) {
        if (seconds >= this.units[i][1] || this.units[i][0] === "second") {
          return relative.format(Math.ceil(seconds / this.units[i][1]), this.units[i][0]);
        }
      }
    },
    show: function (q) {
      var box = $("quota");
      if (!q || !q.limit) { box.hidden = true; return; }
      var share = Math.min(100, 100 * q.used / q.limit);
      var period = this.periods[q.period] || q.period;
      var text = interpolate(q.kind === "requests" ? t("%s of %s requests per %s") : q.kind === "tokens"
        ? t("%s of %s tokens per %s") : t("Budget: %s of %s tokens per %s"),
        [number.format(q.used), number.format(q.limit), period]);
      if (q.spent) { text += " · " + interpolate(t("spent; renews %s"), [this.renews(q.resets_in)]); }
      box.hidden = false;
      box.classList.toggle("spent", !!q.spent);
      box.classList.toggle("low", !q.spent && share >= 80);
      $("quota-fill").style.width = share + "%";
      $("quota-bar").setAttribute("aria-valuemax", String(q.limit));
      $("quota-bar").setAttribute("aria-valuenow", String(Math.min(q.used, q.limit)));
      $("quota-label").textContent = text;
    },
  };

  // --- the tools picker: the tools the assistant may call, chosen per conversation ----

  // The choice is kept in this browser per conversation (a new one's goes with it once
  // it has its id); every message sends it (`tools`), so the run offers those tools.
  var Tools = {
    list: null,          // the tools the user may use (/studio/api/tools/), once loaded
    chosen: [],          // the names enabled for the open conversation
    conversation: null,  // its id; null until a new conversation has one
    init: function () {
      var self = this;
      $("tools-button").addEventListener("click", function () { self.show($("tools-menu").hidden); });
      document.addEventListener("click", function (event) {
        if (!$("tools-picker").contains(event.target)) { self.show(false); }
      });
      $("tools-picker").addEventListener("keydown", function (event) {
        if (event.key === "Escape" && !$("tools-menu").hidden) { self.show(false); $("tools-button").focus(); }
      });
      api("/studio/api/tools/").then(function (body) { self.list = body.tools; self.draw(); })
        .catch(function (err) { self.list = []; self.draw(err.message); });
    },
    show: function (open) {
      $("tools-menu").hidden = !open;
      $("tools-button").setAttribute("aria-expanded", String(open));
    },
    key: function (conversation) { return "openclaw-tools:" + conversation; },
    read: function (conversation) {
      try {
        var saved = JSON.parse(window.localStorage.getItem(this.key(conversation)) || "[]");
        return Array.isArray(saved) ? saved.filter(function (name) { return typeof name === "string"; }) : [];
      } catch (e) { return []; }
    },
    keep: function (conversation, names) {
      try { window.localStorage.setItem(this.key(conversation), JSON.stringify(names)); } catch (e) { /* private mode */ }
    },
    open: function (conversation) {  // the picker follows the first pane's conversation
      this.conversation = conversation || null;
      this.chosen = conversation ? this.read(conversation) : [];
      this.draw();
    },
    adopt: function (conversation) {  // a new conversation got its id: its choice goes with it
      this.conversation = conversation;
      this.keep(conversation, this.chosen);
    },
    names: function () {  // what a message sends: the chosen tools the user may still use
      var usable = this.list;
      return usable ? this.chosen.filter(function (name) {
        return usable.some(function (tool) { return tool.name === name; });
      }) : this.chosen.slice();
    },
    set: function (name, on) {
      this.chosen = this.chosen.filter(function (n) { return n !== name; });
      if (on) { this.chosen.push(name); }
      if (this.conversation) { this.keep(this.conversation, this.chosen); }
      this.count();
    },
    count: function () {
      var enabled = this.names().length;
      $("tools-count").textContent = number.format(enabled);
      $("tools-button").classList.toggle("on", enabled > 0);
      $("tools-button").setAttribute("aria-label", interpolate(tn("Tools: %s tool enabled", "Tools: %s tools enabled", enabled),
        [number.format(enabled)]));
    },
    draw: function (problem) {
      var self = this, list = $("tools-list");
      list.innerHTML = "";
      if (problem || !this.list || !this.list.length) {
        list.appendChild(el("li", { "class": "muted", text: problem || (this.list
          ? t("No tools are available to you yet: an administrator adds them.") : t("Loading…")) }));
      }
      (this.list || []).forEach(function (tool) {
        var box = el("input", { type: "checkbox", value: tool.name,
          onchange: function () { self.set(tool.name, box.checked); } });
        box.checked = self.chosen.indexOf(tool.name) >= 0;
        list.appendChild(el("li", {}, [el("label", {}, [box, el("span", { "class": "tool-text" }, [
          el("span", { "class": "tool-title" }, [el("code", { text: tool.name }),
            el("span", { "class": "badge", text: tool.kind_label || tool.kind }),
            tool.requires_approval ? el("span", { "class": "badge approval", text: t("needs approval") }) : null]),
          tool.description ? el("span", { "class": "description", text: tool.description }) : null])])]));
      });
      this.count();
    },
  };

  // --- a chat pane: one websocket, one conversation -------------------------------

  function Pane(root, modelSelect, primary) {
    this.root = root;
    this.messages = root.querySelector('[data-role="messages"]');
    this.title = root.querySelector('[data-role="title"]');
    this.modelSelect = modelSelect;
    this.primary = primary;
    this.ws = null;
    this.conversation = null;
    this.running = null;
    this.current = null;
    this.queue = [];
  }

  Pane.prototype.connect = function (conversation) {
    var self = this;
    if (this.ws) { this.ws.onclose = null; this.ws.close(); }
    this.conversation = conversation || null;
    this.running = null;
    this.current = null;
    this.messages.innerHTML = "";
    if (this.primary) { Tools.open(this.conversation); }
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var ws = this.ws = new WebSocket(scheme + window.location.host + "/ws/chat/" + (conversation || "new") + "/");
    ws.onopen = function () {
      self.queue.splice(0).forEach(function (frame) { ws.send(JSON.stringify(frame)); });
      if (self.primary) { status(""); }
    };
    ws.onmessage = function (event) { self.handle(JSON.parse(event.data)); };
    ws.onclose = function () {
      if (self.ws !== ws) { return; }
      self.finishRun();
      if (self.primary) { status(t("Disconnected; reconnecting…")); }
      window.setTimeout(function () { if (self.ws === ws) { self.connect(self.conversation); } }, 1500);
    };
    this.showEmpty();
  };

  Pane.prototype.send = function (frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) { this.ws.send(JSON.stringify(frame)); }
    else { this.queue.push(frame); }
  };

  Pane.prototype.showEmpty = function () {
    if (!this.primary || this.messages.children.length) { return; }
    this.messages.appendChild(el("div", { "class": "empty", "data-role": "empty",
      text: t("Ask anything. Enter sends, Shift+Enter starts a new line.") }));
  };

  Pane.prototype.bubble = function (role, text, extra) {
    var empty = this.messages.querySelector('[data-role="empty"]');
    if (empty) { empty.remove(); }
    extra = extra || {};
    var body = el("div", { "class": "body" });
    var who = el("div", { "class": "who" }, [el("span", { text: role === "user" ? t("You") : (extra.model || t("Assistant")) })]);
    var node = el("div", { "class": "msg " + role + (extra.superseded ? " superseded" : "") }, [who, body]);
    node.dataset.raw = text || "";
    body.innerHTML = role === "user" ? md.escapeHtml(text || "").replace(/\n/g, "<br>") : md.render(text || "");
    this.messages.appendChild(node);
    this.scroll();
    return node;
  };

  Pane.prototype.scroll = function () { this.messages.scrollTop = this.messages.scrollHeight; };

  Pane.prototype.finish = function (node, frame) {
    var self = this;
    node.classList.remove("streaming");
    node.querySelectorAll('.tool-card[data-state="running"]').forEach(function (card) { Cards.state(card, "stopped"); });
    if (frame.message_id) { node.dataset.messageId = frame.message_id; }
    var meta = [];
    if (frame.stopped) { meta.push(t("stopped")); }
    if (frame.latency_ms != null) { meta.push(ms(frame.latency_ms)); }
    if (frame.usage && frame.usage.completion_tokens) {
      meta.push(interpolate(tn("%s token", "%s tokens", frame.usage.completion_tokens),
        [number.format(frame.usage.completion_tokens)]));
    }
    var actions = el("div", { "class": "actions" });
    if (this.primary) {
      // regenerate answers the last question again: offered on the last answer only
      this.messages.querySelectorAll(".regenerate").forEach(function (b) { b.remove(); });
      actions.appendChild(el("button", { type: "button", "class": "regenerate", text: "↻ " + t("Regenerate"),
        title: t("Answer the last question again"), onclick: function () { Studio.regenerate(self); } }));
      if (frame.message_id) {
        actions.appendChild(el("button", { type: "button", "class": "branch", text: "↳ " + t("Branch"),
          title: t("Continue in a new conversation from here"),
          onclick: function () { self.send({ type: "fork", message_id: frame.message_id }); } }));
      }
    }
    if (frame.message_id) { this.annotations(actions, frame.message_id); }
    actions.appendChild(el("span", { "class": "meta", text: meta.join(" · ") }));
    node.appendChild(actions);
  };

  // Annotation of a reply (inference/annotation_api.py): thumbs up / down, a corrected
  // version, free tags; kept with the annotator and the time, exported into datasets.
  Pane.prototype.annotations = function (actions, messageId) {
    var url = "/studio/api/annotations/messages/" + messageId + "/";
    var save = function (change, button) {
      return api(url, { method: "POST", body: JSON.stringify(change) })
        .then(function (saved) {
          actions.querySelectorAll(".rate").forEach(function (b) {
            b.setAttribute("aria-pressed", String(b.dataset.rating === saved.rating));
          });
          status(t("Annotation saved."));
          return saved;
        })
        .catch(function (err) { status(err.message); if (button) { button.disabled = false; } });
    };
    [["up", "▲", t("Good answer")], ["down", "▼", t("Bad answer")]].forEach(function (r) {
      var button = el("button", { type: "button", "class": "rate", text: r[1], title: r[2],
        onclick: function () {
          var pressed = button.getAttribute("aria-pressed") === "true";
          save({ rating: pressed ? "none" : r[0] });
        } });
      button.dataset.rating = r[0];
      button.setAttribute("aria-pressed", "false");
      actions.appendChild(button);
    });
    actions.appendChild(el("button", { type: "button", "class": "correct", text: "✎ " + t("Correct"),
      title: t("Write the answer it should have given"),
      onclick: function () {
        var node = actions.parentNode;
        var corrected = window.prompt(t("The corrected answer:"), node.dataset.corrected || node.dataset.raw || "");
        if (corrected !== null) {
          save({ corrected_content: corrected }).then(function (saved) {
            if (saved) { node.dataset.corrected = saved.corrected_content || ""; node.classList.add("corrected"); }
          });
        }
      } }));
    actions.appendChild(el("button", { type: "button", "class": "tag", text: "#" + t("Tags"),
      title: t("Tags for this answer, separated by commas"),
      onclick: function () {
        var tags = window.prompt(t("Tags, separated by commas:"), actions.dataset.tags || "");
        if (tags !== null) {
          var list = tags.split(",").map(function (x) { return x.trim(); }).filter(Boolean);
          save({ tags: list }).then(function (saved) { if (saved) { actions.dataset.tags = saved.tags.join(", "); } });
        }
      } }));
  };

  Pane.prototype.render = function () {
    var node = this.current;
    if (!node) { return; }
    var body = node.querySelector(".body"), part = body.lastElementChild;
    if (!node.classList.contains("with-tools")) { body.innerHTML = md.render(node.dataset.raw); }
    else if (part && part.classList.contains("part")) { part.innerHTML = md.render(part.dataset.raw); }
    this.scroll();
  };

  // The answer a run's events go to, made by its first token or tool call.
  Pane.prototype.answer = function (frame) {
    if (!this.current || this.current.dataset.run !== frame.id) {
      this.current = this.bubble("assistant", "", { model: this.modelSelect.value });
      this.current.classList.add("streaming");
      this.current.dataset.run = frame.id;
      this.current.dataset.tokens = "0";
    }
    return this.current;
  };

  Pane.prototype.text = function (node, text) {
    node.dataset.raw += text;
    if (!node.classList.contains("with-tools")) { return; }
    var body = node.querySelector(".body"), part = body.lastElementChild;
    if (!part || !part.classList.contains("part")) {  // text after a card: a new part
      part = el("div", { "class": "part" });
      part.dataset.raw = "";
      body.appendChild(part);
    }
    part.dataset.raw += text;
  };

  // The final text of an answer with cards: as streamed, unless a plugin changed it after
  // (then it follows the cards whole).
  Pane.prototype.settle = function (node, content) {
    if (!node.classList.contains("with-tools") || !content || content === node.dataset.raw) { return; }
    node.querySelectorAll(".body > .part").forEach(function (part) { part.remove(); });
    node.dataset.raw = "";
    this.text(node, content);
  };

  Pane.prototype.toolCall = function (frame) {
    var message = this.answer(frame);
    Cards.place(message, Cards.make({ id: frame.call_id, name: frame.name, arguments: frame.arguments,
      node: frame.node, approval: frame.approval }));
    this.scroll();
  };

  Pane.prototype.toolResult = function (frame) {
    var card = Cards.find(this.messages, frame.call_id, frame.name);
    if (!card) {  // a call made before this page was open
      card = Cards.make({ id: frame.call_id, name: frame.name, node: frame.node });
      Cards.place(this.answer(frame), card);
    }
    Cards.result(card, frame);
    this.scroll();
  };

  // A reviewer's decision, as the resumed run reports it: the waiting cards run (with
  // the edited arguments) or are refused.
  Pane.prototype.toolDecision = function (frame) {
    this.messages.querySelectorAll('.tool-card[data-state="waiting"]').forEach(function (card) {
      if (frame.node && card.dataset.node && card.dataset.node !== frame.node) { return; }
      if (frame.action === "reject") {
        Cards.state(card, "rejected");
        if (frame.reason) { Cards.outcome(card, t("Rejected"), frame.reason, true); }
        return;
      }
      var edited = frame.action === "edit" && frame.arguments && frame.arguments[card.dataset.call];
      if (edited) { Cards.edited(card, edited); }
      Cards.state(card, "running");
    });
  };

  Pane.prototype.finishRun = function () {
    this.running = null;
    Studio.updateButtons();
  };

  Pane.prototype.handle = function (frame) {
    var self = this;
    if (this.primary) { Panel.handle(frame); }
    switch (frame.type) {
      case "history":
        this.conversation = frame.conversation;
        this.messages.innerHTML = "";
        // A regenerate stores its question again: shown once, as it was live, with the
        // answers it replaced faded below it.
        var asked = null;
        (frame.messages || []).forEach(function (m) {
          var text = typeof m.content === "string" ? m.content : JSON.stringify(m.content);
          if (m.role === "user" && asked && asked.replaced && asked.text === text) {
            asked.replaced = false;
            if (m.in_context) { asked.node.classList.remove("superseded"); }
            return;
          }
          var node = self.bubble(m.role, text, { model: m.model, superseded: !m.in_context });
          if (m.role === "user") { asked = { node: node, text: text, replaced: false }; }
          if (m.role === "assistant") {
            if (asked && !m.in_context && asked.node.classList.contains("superseded")) { asked.replaced = true; }
            self.finish(node, { message_id: m.id, latency_ms: m.latency_ms, usage: m.usage });
          }
        });
        this.showEmpty();
        if (frame.waiting) { this.approval(frame.waiting); }
        if (frame.model && config.models.some(function (m) { return m.name === frame.model; })) {
          this.modelSelect.value = frame.model;
        }
        if (this.primary) { Studio.markActive(frame.conversation); }
        break;
      case "conversation":
        if (!this.conversation) {
          this.conversation = frame.conversation;
          if (this.primary) { Studio.remember(frame.conversation); Tools.adopt(frame.conversation); Studio.loadList(); }
        }
        if (this.primary) { Panel.reset(); }
        break;
      case "regenerate":
        // only the answer being replaced fades: what follows the last question
        for (var later = this.messages.lastElementChild; later && !later.classList.contains("user");
          later = later.previousElementSibling) {
          if (later.classList.contains("assistant")) { later.classList.add("superseded"); }
        }
        this.running = frame.id;
        Studio.updateButtons();
        break;
      case "token":
        this.answer(frame);
        this.text(this.current, frame.text);
        this.current.dataset.tokens = String(Number(this.current.dataset.tokens) + 1);
        if (!this.pending) {
          this.pending = true;
          window.requestAnimationFrame(function () { self.pending = false; self.render(); });
        }
        break;
      case "tool_call":
        this.toolCall(frame);
        break;
      case "tool_result":
        this.toolResult(frame);
        break;
      case "approval":
        this.toolDecision(frame);
        break;
      case "done":
        var node = this.current && this.current.dataset.run === frame.id ? this.current
          : this.bubble("assistant", "", { model: frame.model });
        this.settle(node, frame.content);
        node.dataset.raw = frame.content || node.dataset.raw;
        this.current = node;
        this.render();
        if (frame.model) { node.querySelector(".who span").textContent = frame.model; }
        this.finish(node, frame);
        this.current = null;
        if (frame.id === this.running || !this.running) { this.finishRun(); }
        break;
      case "error":
        if (frame.id && frame.id === this.running) { this.finishRun(); }
        var bubble = this.bubble("assistant", frame.message || frame.code, {});
        bubble.classList.add("error");
        bubble.dataset.code = frame.code;
        if (frame.quota) { Quota.show(frame.quota); }
        if (frame.status === 429 && this.primary) { status(frame.message); }  // a spent quota
        break;
      case "quota":
        Quota.show(frame.quota);
        break;
      case "waiting":
        if (frame.id === this.running) { this.finishRun(); }
        if (this.current) { this.current.classList.remove("streaming"); }
        this.approval(frame);
        break;
      case "forked":
        if (frame.fork && frame.fork.id) { Tools.keep(frame.fork.id, Tools.chosen); Studio.open(frame.fork.id); Studio.loadList(); status(t("Branched into a new conversation.")); }
        break;
      default:
        break;
    }
  };

  Pane.prototype.approval = function (frame) {
    var self = this, others = [];
    (frame.interrupts || []).forEach(function (i) {
      if (i.value && i.value.kind === "tool_approval") { self.toolReview(i.value); } else { others.push(i); }
    });
    // The draft this run streamed becomes the card (so the answer is not shown twice).
    var streamed = this.current && frame.id && this.current.dataset.run === frame.id ? this.current : null;
    others.forEach(function (i) { self.approvalCard(i.value, streamed); streamed = null; });
  };

  // A workflow's human-approval stop: the reviewer's question and the draft (the answer
  // so far, else the message) as text, with Approve / Edit / Reject, spent once used.
  Pane.prototype.approvalCard = function (value, streamed) {
    var self = this;
    value = value && typeof value === "object" ? value : { prompt: value == null ? "" : String(value) };
    var draft = typeof value.reply === "string" ? value.reply : (typeof value.message === "string" ? value.message : "");
    var node = streamed || this.bubble("assistant", "", {});
    // The card is no longer the answer being streamed: a render still pending from the
    // draft's last tokens (a requestAnimationFrame) must not write the draft over it.
    if (this.current === node) { this.current = null; }
    node.classList.remove("streaming");
    node.classList.add("waiting", "approval-card");
    var body = node.querySelector(".body");
    body.innerHTML = "";
    body.appendChild(el("p", { "class": "approval-prompt", text: value.prompt || t("Approve this answer?") }));
    var shown = el("div", { "class": "approval-draft", text: draft });
    var editor = el("textarea", { "class": "approval-edit", "aria-label": t("The corrected answer") });
    editor.value = draft;
    editor.hidden = true;
    body.appendChild(shown);
    body.appendChild(editor);
    var buttons = [];
    var decide = function (frame, used) {
      buttons.forEach(function (b) { b.disabled = true; });
      editor.disabled = true;
      used.classList.add("chosen");
      self.running = "d" + Date.now().toString(36);
      frame.id = self.running;
      if (frame.type === "approve") {  // the answer replaces the draft in this message
        node.dataset.run = self.running;
        node.classList.remove("waiting");
        self.current = node;
      }
      Studio.updateButtons();
      self.send(frame);
    };
    var approve = el("button", { type: "button", "class": "approve", text: "✓ " + t("Approve") });
    var edit = el("button", { type: "button", "class": "edit", text: "✎ " + t("Edit") });
    var approveEdit = el("button", { type: "button", "class": "approve-edit", text: "✓ " + t("Approve the edited answer") });
    var reject = el("button", { type: "button", "class": "reject", text: "✕ " + t("Reject") });
    approveEdit.hidden = true;
    approve.onclick = function () { decide({ type: "approve" }, approve); };
    edit.onclick = function () {
      editor.hidden = false; shown.hidden = true; edit.hidden = true; approve.hidden = true;
      approveEdit.hidden = false; editor.focus();
    };
    approveEdit.onclick = function () {
      if (!editor.value.trim()) { editor.classList.add("invalid"); return; }
      decide({ type: "approve", content: editor.value }, approveEdit);
    };
    reject.onclick = function () {
      var reason = window.prompt(t("Why is this rejected? (optional)"), "");
      if (reason === null) { return; }
      decide({ type: "reject", reason: reason }, reject);
    };
    buttons = [approve, edit, approveEdit, reject];
    node.appendChild(el("div", { "class": "actions approval-actions" }, buttons));
    this.scroll();
  };

  // A run waits for a person to review tool calls: their cards (made again when the
  // page was reloaded meanwhile) get the review's buttons.
  Pane.prototype.toolReview = function (value) {
    var self = this, cards = [], made = null;
    (value.tool_calls || []).forEach(function (call) {
      var card = Cards.find(self.messages, call.id, call.name);
      if (!card) {
        if (!made) { made = self.bubble("assistant", "", {}); made.dataset.tokens = "0"; }
        card = Cards.make({ id: call.id, name: call.name, arguments: call.arguments, node: value.node, approval: true });
        Cards.place(made, card);
      }
      card.dataset.call = call.id;
      Cards.state(card, "waiting");
      cards.push(card);
    });
    cards.forEach(function (card) {
      Cards.review(card, function (action) { self.decideTools(cards, action); });
    });
    this.scroll();
  };

  // Send the review's decision; the resumed run's answer goes on in the same message.
  Pane.prototype.decideTools = function (cards, action) {
    var decision = { type: action === "reject" ? "reject" : "approve" };
    try {
      if (action === "edit") { decision.content = JSON.stringify(Cards.arguments(cards)); }
    } catch (err) { status(err.message); return; }
    if (action === "reject") {
      var reason = window.prompt(t("Why is this call rejected? (optional; the model is told)"), "");
      if (reason === null) { return; }
      decision.reason = reason;
    }
    var used = { approve: "button.approve", edit: "button.approve-edit", reject: "button.reject" }[action];
    cards.forEach(function (card) {
      card.querySelectorAll(".tool-review button, .tool-review textarea").forEach(function (b) { b.disabled = true; });
      card.querySelector(".tool-review " + used).classList.add("chosen");
    });
    var message = cards[0].closest(".msg");
    this.running = "d" + Date.now().toString(36);
    message.dataset.run = this.running;
    message.classList.add("streaming");
    this.current = message;
    Studio.updateButtons();
    this.send(Object.assign({ id: this.running }, decision));
  };

  Pane.prototype.ask = function (text, id) {
    this.bubble("user", text);
    this.running = id;
    this.send({ type: "message", id: id, content: text, model: this.modelSelect.value,
      workflow: $("workflow").value, tools: Tools.names() });
  };

  // --- the page --------------------------------------------------------------------

  var Studio = {
    panes: [],
    comparing: false,
    init: function () {
      // config.models: chat models only (chat.studio.available_models)
      var first = config.models.some(function (m) { return m.name === config.default_model; })
        ? config.default_model : (config.models[0] || {}).name;
      var second = (config.models.filter(function (m) { return m.name !== first; })[0] || {}).name || first;
      [[$("model"), first], [$("model-b"), second]].forEach(function (pick) {
        config.models.forEach(function (m) { pick[0].appendChild(el("option", { value: m.name, text: m.label, title: m.description || m.label })); });
        if (pick[1]) { pick[0].value = pick[1]; }
      });
      if (!config.models.length) { status(t("No chat models in the registry yet: add one in the admin.")); }
      config.workflows.forEach(function (w) { $("workflow").appendChild(el("option", { value: w.name, text: w.label })); });
      this.panes = [new Pane($("pane-a"), $("model"), true), new Pane($("pane-b"), $("model-b"), false)];
      Panel.draw();
      Panel.reset();
      Quota.show(config.quota);
      Tools.init();
      this.bind();
      var start = window.location.hash.slice(1) || null;
      this.panes[0].connect(start);
      this.loadList();
      document.body.dataset.ready = "true";  // for tests and anyone waiting on the page
    },
    bind: function () {
      var self = this, prompt = $("prompt");
      $("composer").addEventListener("submit", function (event) { event.preventDefault(); self.submit(); });
      prompt.addEventListener("keydown", function (event) {
        if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); self.submit(); }
      });
      prompt.addEventListener("input", function () {
        prompt.style.height = "auto";
        prompt.style.height = Math.min(prompt.scrollHeight, 192) + "px";
      });
      $("stop").addEventListener("click", function () {
        self.panes.forEach(function (pane) { if (pane.running) { pane.send({ type: "stop", id: "stop-" + Date.now() }); } });
      });
      $("new-chat").addEventListener("click", function () { self.open(null); });
      var timer = null;
      $("search").addEventListener("input", function () { window.clearTimeout(timer); timer = window.setTimeout(function () { self.loadList(); }, 200); });
      $("toggle-panel").addEventListener("click", function () { self.togglePanel(); });
      $("close-panel").addEventListener("click", function () { self.togglePanel(false); });
      $("compare").addEventListener("click", function () { self.toggleCompare(); });
      $("theme").addEventListener("click", function () {
        var next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
        document.documentElement.dataset.theme = next;
        try { window.localStorage.setItem("openclaw-theme", next); } catch (e) { /* private mode */ }
      });
      $("open-sidebar").addEventListener("click", function () { $("sidebar").classList.add("open"); });
      $("close-sidebar").addEventListener("click", function () { $("sidebar").classList.remove("open"); });
      document.querySelectorAll(".lang a").forEach(function (link) {  // stay in this conversation
        link.addEventListener("click", function () { link.href = link.getAttribute("href").split("#")[0] + window.location.hash; });
      });
      $("workflow").addEventListener("change", function () { Panel.draw(); Panel.reset(); });
      $("model").addEventListener("change", function () { self.updateTitles(); });
      $("model-b").addEventListener("change", function () { self.updateTitles(); });
    },
    submit: function () {
      var prompt = $("prompt"), text = prompt.value;
      if (!text.trim() || this.busy()) { return; }
      if (!$("model").value) { status(t("Pick a model first.")); return; }
      var id = "m" + Date.now().toString(36);
      var active = this.comparing ? this.panes : [this.panes[0]];
      active.forEach(function (pane, i) { pane.ask(text, id + (i ? "b" : "")); });
      prompt.value = "";
      prompt.style.height = "auto";
      this.updateButtons();
    },
    regenerate: function (pane) {
      if (this.busy()) { return; }
      pane.send({ type: "regenerate", id: "r" + Date.now().toString(36), model: pane.modelSelect.value });
    },
    busy: function () { return this.panes.some(function (p) { return p.running; }); },
    updateButtons: function () {
      var busy = this.busy();
      $("send").hidden = busy;
      $("stop").hidden = !busy;
    },
    open: function (conversation) {
      this.panes[0].connect(conversation);
      if (this.comparing) { this.panes[1].connect(null); }
      Panel.reset();
      this.remember(conversation);
      this.markActive(conversation);
      $("sidebar").classList.remove("open");
      this.updateButtons();
    },
    remember: function (conversation) {
      window.history.replaceState(null, "", conversation ? "#" + conversation : window.location.pathname);
    },
    markActive: function (conversation) {
      document.querySelectorAll("#conversations li").forEach(function (li) {
        li.classList.toggle("active", li.dataset.id === conversation);
      });
    },
    loadList: function () {
      var self = this, query = $("search").value;
      api("/studio/api/conversations/?q=" + encodeURIComponent(query)).then(function (body) {
        var list = $("conversations");
        list.innerHTML = "";
        if (!body.conversations.length) {
          list.appendChild(el("li", { "class": "muted", text: query ? t("No matches.") : t("No conversations yet.") }));
        }
        body.conversations.forEach(function (c) { list.appendChild(self.listItem(c)); });
        self.markActive(self.panes[0].conversation);
      }).catch(function (err) { status(err.message); });
    },
    listItem: function (c) {
      // the link covers the whole row (CSS), so a click anywhere on it, or Enter on the
      // focused link, opens the conversation; the title is shown as plain text
      var self = this, title = md.plain(c.title) || t("New chat");
      var rename = el("button", { type: "button", "class": "rename", title: t("Rename"), "aria-label": t("Rename"), text: "✎",
        onclick: function () {
          var renamed = window.prompt(t("New title"), title);
          if (!renamed) { return; }
          api("/studio/api/conversations/" + c.id + "/", { method: "POST", body: JSON.stringify({ title: renamed }) })
            .then(function () { self.loadList(); }).catch(function (err) { status(err.message); });
        } });
      var remove = el("button", { type: "button", "class": "delete", title: t("Delete"), "aria-label": t("Delete"), text: "✕",
        onclick: function () {
          if (!window.confirm(t("Delete this conversation?"))) { return; }
          api("/studio/api/conversations/" + c.id + "/", { method: "DELETE" }).then(function () {
            if (self.panes[0].conversation === c.id) { self.open(null); }
            self.loadList();
          }).catch(function (err) { status(err.message); });
        } });
      return el("li", { "data-id": c.id }, [
        el("a", { href: "#" + c.id, "class": "open", text: title, title: title,
          onclick: function (event) { event.preventDefault(); self.open(c.id); } }),
        c.updated ? el("time", { "class": "ago", datetime: c.updated, text: ago(c.updated),
          title: new Date(c.updated).toLocaleString(locale) }) : null,
        el("span", { "class": "tools" }, [rename, remove]),
      ]);
    },
    togglePanel: function (force) {
      var panel = $("panel"), show = force === undefined ? panel.hidden : force;
      panel.hidden = !show;
      $("toggle-panel").setAttribute("aria-pressed", String(show));
    },
    toggleCompare: function () {
      this.comparing = !this.comparing;
      document.body.classList.toggle("comparing", this.comparing);
      $("compare").setAttribute("aria-pressed", String(this.comparing));
      if (this.comparing) { this.panes[1].connect(null); } else if (this.panes[1].ws) {
        var ws = this.panes[1].ws;
        this.panes[1].ws = null;
        ws.close();
      }
      this.updateTitles();
    },
    updateTitles: function () {
      this.panes.forEach(function (pane) { if (pane.title) { pane.title.textContent = pane.modelSelect.value; } });
    },
  };

  Studio.init();
  window.OpenClawStudio = Studio;
})();
