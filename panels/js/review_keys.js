/*
 * label-grader: keyboard for the Label review panel's review mode.
 *
 * A plain script (no build step) that the FiftyOne App loads for this plugin (fiftyone.yml
 * `js_bundle`). It registers one component, `LabelGraderKeys`, which the Python panel renders
 * in review mode with `types.View(component="LabelGraderKeys", composite_view=True,
 * on_key=self.on_hotkey)`. While it is shown, a key pressed anywhere in the App (outside a
 * text input) is sent at once to the panel's `on_hotkey` method as one panel event: no state
 * write, so none of the App's debounce on input changes.
 */
(function () {
  "use strict";
  var React = window.React;
  var plugins = window.__fop__;
  var operators = window.__foo__;
  if (!React || !plugins || !operators || !operators.useTriggerPanelEvent) {
    console.error("label-grader: this FiftyOne App does not expose the plugin API; review keys are off");
    return;
  }
  var h = React.createElement;
  var KEY = /^[a-z0-9]$/;

  function typingInto(target) {
    if (!target) return false;
    var tag = (target.tagName || "").toUpperCase();
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || !!target.isContentEditable;
  }

  function LabelGraderKeys(props) {
    var view = (props && props.schema && props.schema.view) || {};
    var trigger = operators.useTriggerPanelEvent();
    var latest = React.useRef({ view: view, trigger: trigger });
    latest.current = { view: view, trigger: trigger };
    var sent = React.useState(0);

    React.useEffect(function () {
      function onKeyDown(e) {
        if (e.repeat || e.ctrlKey || e.metaKey || e.altKey || typingInto(e.target)) return;
        var key = (e.key || "").toLowerCase();
        var cur = latest.current;
        if (!KEY.test(key) || !cur.view.on_key) return;
        e.preventDefault();
        e.stopPropagation();
        cur.trigger(cur.view.on_key, { key: key, sent_at: Date.now() });
        sent[1](function (n) { return n + 1; });
      }
      window.addEventListener("keydown", onKeyDown, true);
      return function () { window.removeEventListener("keydown", onKeyDown, true); };
    }, []);

    return h(
      "div",
      {
        "data-label-grader-keys": "on",
        style: { fontSize: "0.85rem", opacity: 0.8, padding: "2px 0", whiteSpace: "normal", overflowWrap: "anywhere" },
      },
      "\u2328 Keys on: " + (view.help || "a accept \u00b7 1-9 relabel \u00b7 b use box \u00b7 d delete \u00b7 c adopt \u00b7 u undo \u00b7 n next \u00b7 p previous")
    );
  }

  /*
   * LabelGraderClassPicker: review mode's "Relabel to" class picker, searchable (type to
   * filter all classes, Enter takes the first match, "/" anywhere focuses it). A choice is
   * sent once, as one panel event `on_pick` with the label id the picker was drawn for, so
   * the panel can refuse a choice made for another label than the one it shows. (The App's
   * own dropdown writes panel state and re-sends its value after the next label is drawn,
   * which relabelled that label too: issue 23.)
   */
  function LabelGraderClassPicker(props) {
    var view = (props && props.schema && props.schema.view) || {};
    var trigger = operators.useTriggerPanelEvent();
    var choices = view.choices || [];
    var labelId = view.label_id || "";
    var q = React.useState(""), query = q[0], setQuery = q[1];
    var o = React.useState(false), open = o[0], setOpen = o[1];
    var input = React.useRef(null);
    var sentFor = React.useRef(null);
    React.useEffect(function () { setQuery(""); setOpen(false); sentFor.current = null; }, [labelId]);
    React.useEffect(function () {
      function onSlash(e) {
        if (e.key !== "/" || typingInto(e.target) || !input.current) return;
        e.preventDefault();
        e.stopPropagation();
        input.current.focus();
      }
      window.addEventListener("keydown", onSlash, true);
      return function () { window.removeEventListener("keydown", onSlash, true); };
    }, []);
    var needle = query.trim().toLowerCase();
    var matches = choices.filter(function (c) { return !needle || c.toLowerCase().indexOf(needle) >= 0; });
    matches.sort(function (a, b) {  // names starting with what was typed first
      return (needle && a.toLowerCase().indexOf(needle) !== 0) - (needle && b.toLowerCase().indexOf(needle) !== 0);
    });

    function pick(value) {
      if (!value || !view.on_pick || sentFor.current === labelId) return;
      sentFor.current = labelId;  // one choice per label drawn
      trigger(view.on_pick, { label_id: labelId, value: value, sent_at: Date.now() });
      setQuery("");
      setOpen(false);
      if (input.current) input.current.blur();
    }

    var list = open ? h(
      "div",
      { role: "listbox", style: { maxHeight: "180px", overflowY: "auto", border: "1px solid rgba(128,128,128,0.5)",
                                  borderRadius: "4px", marginTop: "2px" } },
      matches.length ? matches.map(function (c, i) {
        return h("div", {
          key: c, role: "option", "aria-selected": i === 0 && !!needle,
          onMouseDown: function (e) { e.preventDefault(); pick(c); },
          style: { padding: "3px 8px", cursor: "pointer",
                   background: i === 0 && needle ? "rgba(255,109,4,0.25)" : "transparent" },
        }, c);
      }) : h("div", { style: { padding: "3px 8px", opacity: 0.7 } }, "no class matches")
    ) : null;

    return h(
      "div",
      { "data-label-grader-relabel": labelId, style: { width: "320px", maxWidth: "100%" } },
      h("div", { style: { fontSize: "0.85rem", opacity: 0.8 } },
        (view.label || "Relabel to") + " (" + choices.length + " classes; / to search)"),
      h("input", {
        ref: input, type: "text", value: query, placeholder: "type to search classes…",
        "aria-label": view.label || "Relabel to",
        onChange: function (e) { setQuery(e.target.value); setOpen(true); },
        onFocus: function () { setOpen(true); },
        onBlur: function () { setOpen(false); },
        onKeyDown: function (e) {
          if (e.key === "Enter") { e.preventDefault(); pick(matches[0]); }
          else if (e.key === "Escape") { setQuery(""); e.target.blur(); }
        },
        style: { width: "100%", padding: "4px 6px", font: "inherit", color: "inherit",
                 background: "transparent", border: "1px solid rgba(128,128,128,0.6)", borderRadius: "4px" },
      }),
      list
    );
  }

  plugins.registerComponent({
    name: "LabelGraderClassPicker",
    label: "Label review class picker",
    component: LabelGraderClassPicker,
    type: plugins.PluginComponentType.Component,
    activator: function () { return true; },
  });

  plugins.registerComponent({
    name: "LabelGraderKeys",
    label: "Label review keys",
    component: LabelGraderKeys,
    type: plugins.PluginComponentType.Component,
    activator: function () { return true; },
  });
})();
