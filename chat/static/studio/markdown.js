// A small, safe Markdown renderer: the text is HTML-escaped first, then a few
// constructs are turned into tags (fenced and inline code, headings, bold, italics,
// lists, quotes, http(s) links). Nothing the model writes becomes markup of its own.
(function () {
  "use strict";

  function escapeHtml(text) {
    return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
  }

  function inline(text) {
    // text is already escaped; code spans are cut out so nothing inside them changes
    var codes = [];
    text = text.replace(/`([^`\n]+)`/g, function (_m, code) {
      codes.push("<code>" + code + "</code>");
      return "\u0000" + (codes.length - 1) + "\u0000";
    });
    text = text
      .replace(/\*\*([^*\n]+)\*\*/g, "<strong>$1</strong>")
      .replace(/(^|[^*])\*([^*\n]+)\*/g, "$1<em>$2</em>")
      .replace(/\[([^\]\n]+)\]\((https?:\/\/[^\s)"]+)\)/g,
        '<a href="$2" target="_blank" rel="noopener noreferrer nofollow">$1</a>');
    return text.replace(/\u0000(\d+)\u0000/g, function (_m, i) { return codes[+i]; });
  }

  function render(source) {
    var lines = escapeHtml(source || "").split("\n");
    var out = [], paragraph = [], list = null, i = 0;
    function flush() {
      if (paragraph.length) { out.push("<p>" + paragraph.map(inline).join("<br>") + "</p>"); }
      paragraph = [];
      if (list) { out.push("</" + list + ">"); list = null; }
    }
    while (i < lines.length) {
      var line = lines[i], match;
      if ((match = line.match(/^```\s*([\w+-]*)\s*$/))) {
        flush();
        var code = [];
        i += 1;
        while (i < lines.length && !/^```\s*$/.test(lines[i])) { code.push(lines[i]); i += 1; }
        out.push('<pre><code data-lang="' + match[1] + '">' + code.join("\n") + "</code></pre>");
      } else if ((match = line.match(/^(#{1,6})\s+(.*)$/))) {
        flush();
        var level = Math.min(6, match[1].length + 2);
        out.push("<h" + level + ">" + inline(match[2]) + "</h" + level + ">");
      } else if ((match = line.match(/^\s*(?:[-*+]|(\d+)[.)])\s+(.*)$/))) {
        if (paragraph.length) { var kept = list; list = null; flush(); list = kept; }
        var kind = match[1] ? "ol" : "ul";
        if (list !== kind) { if (list) { out.push("</" + list + ">"); } out.push("<" + kind + ">"); list = kind; }
        out.push("<li>" + inline(match[2]) + "</li>");
      } else if ((match = line.match(/^&gt;\s?(.*)$/))) {
        flush();
        out.push("<blockquote>" + inline(match[1]) + "</blockquote>");
      } else if (!line.trim()) {
        flush();
      } else {
        if (list) { out.push("</" + list + ">"); list = null; }
        paragraph.push(line);
      }
      i += 1;
    }
    flush();
    return out.join("");
  }

  // The text without its Markdown marks (emphasis, code, headings, links), for a line
  // that shows plain text: a conversation's title in the list.
  function plain(source) {
    return String(source || "")
      .replace(/`+([^`]*)`+/g, "$1")
      .replace(/\[([^\]\n]*)\]\([^)\s]*\)/g, "$1")
      .replace(/(\*\*|~~)(?=\S)([^\n]*?\S)\1/g, "$2")
      .replace(/(^|[^*\w])\*(?=\S)([^*\n]*?\S)\*(?![*\w])/g, "$1$2")
      .replace(/\*{2,}|~~/g, "")
      .replace(/^\s*(?:#{1,6}\s+|>\s*)/, "")
      .replace(/\s+/g, " ").trim();
  }

  window.OpenClawMarkdown = { render: render, escapeHtml: escapeHtml, plain: plain };
})();
