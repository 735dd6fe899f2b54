// gettext from Django's JavaScript catalogue (/jsi18n/), loaded before the bundle.
// `t("…")` is a keyword of makemessages' djangojs domain (chat/management/commands).
export const t = (text) => (window.gettext ? window.gettext(text) : text);
export const tn = (one, many, n) =>
  window.ngettext ? window.ngettext(one, many, n) : n === 1 ? one : many;
export const interpolate = (format, args, named) =>
  window.interpolate ? window.interpolate(format, args, named) : format;
