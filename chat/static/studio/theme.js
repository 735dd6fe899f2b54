// Light or dark, chosen before the page paints: the saved choice, else the system's.
(function () {
  "use strict";
  var saved = null;
  try { saved = window.localStorage.getItem("openclaw-theme"); } catch (e) { /* private mode */ }
  var dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.dataset.theme = saved || (dark ? "dark" : "light");
})();
