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
  function stepName(id) { return Object.prototype.hasOwnProperty.call(STEPS, id) ? STEPS[id] : id; }
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

  // --- the run panel --------------------------------------------------------------

  var Panel = {
    positions: {},
    draw: function () {
      var chosen = config.workflows.filter(function (w) { return w.name === $("workflow").value; })[0];
      var graph = (chosen || config.workflows[0]).graph, box = $("graph"), order = [], seen = {}, queue = ["__start__"];
      while (queue.length) {
        var id = queue.shift();
        if (seen[id] || graph.nodes.indexOf(id) < 0) { continue; }
        seen[id] = true;
        if (id !== "__end__") { order.push(id); }
        graph.edges.forEach(function (e) { if (e.source === id && !e.conditional) { queue.push(e.target); } });
        graph.edges.forEach(function (e) { if (e.source === id && e.conditional) { queue.push(e.target); } });
      }
      graph.nodes.forEach(function (n) { if (!seen[n] && n !== "__end__") { order.push(n); } });
      order.push("__end__");
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
      this.timings = [];
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
      } else if (frame.type === "done" && frame.latency_ms != null) {
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
      this.timings.push([frame.node, frame.ms || 0]);
      var most = Math.max.apply(null, this.timings.map(function (x) { return x[1]; }).concat([1]));
      var list = $("timeline");
      list.innerHTML = "";
      this.timings.forEach(function (x) {
        var bar = el("span", {});
        bar.style.width = Math.max(2, 100 * x[1] / most) + "%";
        list.appendChild(el("li", {}, [el("span", { text: stepName(x[0]) }), el("span", { "class": "bar" }, [bar]),
          el("span", { "class": "muted", text: ms(x[1]) })]));
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
    node.querySelector(".body").innerHTML = md.render(node.dataset.raw);
    this.scroll();
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
          if (this.primary) { Studio.remember(frame.conversation); Studio.loadList(); }
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
        if (!this.current || this.current.dataset.run !== frame.id) {
          this.current = this.bubble("assistant", "", { model: this.modelSelect.value });
          this.current.classList.add("streaming");
          this.current.dataset.run = frame.id;
          this.current.dataset.tokens = "0";
        }
        this.current.dataset.raw += frame.text;
        this.current.dataset.tokens = String(Number(this.current.dataset.tokens) + 1);
        if (!this.pending) {
          this.pending = true;
          window.requestAnimationFrame(function () { self.pending = false; self.render(); });
        }
        break;
      case "done":
        var node = this.current && this.current.dataset.run === frame.id ? this.current
          : this.bubble("assistant", "", { model: frame.model });
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
        this.approval(frame);
        break;
      case "forked":
        if (frame.fork && frame.fork.id) { Studio.open(frame.fork.id); Studio.loadList(); status(t("Branched into a new conversation.")); }
        break;
      default:
        break;
    }
  };

  Pane.prototype.approval = function (frame) {
    var self = this;
    var shown = (frame.interrupts || []).map(function (i) {
      return typeof i.value === "string" ? i.value : JSON.stringify(i.value);
    }).join("\n");
    var node = this.bubble("assistant", t("Waiting for approval") + ":\n\n" + shown, {});
    node.classList.add("waiting");
    var decide = function (type) {
      return function () {
        node.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
        self.running = "d" + Date.now().toString(36);
        Studio.updateButtons();
        self.send({ type: type, id: self.running });
      };
    };
    node.appendChild(el("div", { "class": "actions" }, [
      el("button", { type: "button", "class": "approve", text: "✓ " + t("Approve"), onclick: decide("approve") }),
      el("button", { type: "button", "class": "reject", text: "✕ " + t("Reject"), onclick: decide("reject") }),
    ]));
  };

  Pane.prototype.ask = function (text, id) {
    this.bubble("user", text);
    this.running = id;
    this.send({ type: "message", id: id, content: text, model: this.modelSelect.value,
      workflow: $("workflow").value });
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
