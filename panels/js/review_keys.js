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
        if (e.ctrlKey || e.metaKey || e.altKey || typingInto(e.target)) return;
        var key = (e.key || "").toLowerCase();
        var arrow = /^arrow(left|right|up|down)$/.exec(key);
        if (arrow) key = (e.shiftKey ? "shift+" : "") + arrow[1];  // box nudges (may repeat)
        else if (e.repeat) return;
        var cur = latest.current;
        if (!(arrow || KEY.test(key)) || !cur.view.on_key) return;
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

    var typed = query.trim();
    var isNew = !!typed && choices.indexOf(typed) < 0 && typed !== view.current;

    function pick(value, newClass) {
      if (!value || !view.on_pick || sentFor.current === labelId) return;
      sentFor.current = labelId;  // one choice per label drawn
      trigger(view.on_pick, { label_id: labelId, value: value, new_class: !!newClass, sent_at: Date.now() });
      setQuery("");
      setOpen(false);
      if (input.current) input.current.blur();
    }

    var list = open ? h(
      "div",
      { role: "listbox", style: { maxHeight: "180px", overflowY: "auto", border: "1px solid rgba(128,128,128,0.5)",
                                  borderRadius: "4px", marginTop: "2px" } },
      (matches.length || isNew) ? matches.map(function (c, i) {
        return h("div", {
          key: c, role: "option", "aria-selected": i === 0 && !!needle,
          onMouseDown: function (e) { e.preventDefault(); pick(c); },
          style: { padding: "3px 8px", cursor: "pointer",
                   background: i === 0 && needle ? "rgba(255,109,4,0.25)" : "transparent" },
        }, c);
      }).concat(isNew ? [h("div", {
        // a class outside the dataset's is only made by choosing this, never by Enter, so a
        // typo ("persn") does not become a class
        key: "__new__", role: "option", "data-new-class": "1",
        onMouseDown: function (e) { e.preventDefault(); pick(typed, true); },
        style: { padding: "3px 8px", cursor: "pointer", fontStyle: "italic", borderTop: "1px solid rgba(128,128,128,0.4)" },
      }, "Relabel to new class \u201c" + typed + "\u201d")] : [])
      : h("div", { style: { padding: "3px 8px", opacity: 0.7 } }, "no class matches")
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

  /*
   * LabelGraderControl: one of the panel's list controls (kind "select", "number" or
   * "checkbox"). Its value lives here and goes to the panel as one `on_change` event
   * {name, value}; nothing is written into the App's panel state. (Each panel state write
   * makes the App save its spaces and reload its page, which cleared the sidebar filters:
   * issue 23.) The server sends the value to show in `view.value`.
   */
  function LabelGraderControl(props) {
    var view = (props && props.schema && props.schema.view) || {};
    var trigger = operators.useTriggerPanelEvent();
    var kind = view.kind || "select";
    var shown = view.value === undefined || view.value === null ? "" : view.value;
    var st = React.useState(shown), local = st[0], setLocal = st[1];
    React.useEffect(function () { setLocal(shown); }, [shown]);

    function send(value) {
      if (view.on_change) trigger(view.on_change, { name: view.name, value: value });
    }
    var box = { display: "flex", flexDirection: "column", gap: "2px", minWidth: kind === "checkbox" ? 0 : "110px",
                maxWidth: "170px" };
    var cap = h("span", { style: { fontSize: "0.85rem", opacity: 0.8 } }, view.label || view.name);
    var inputStyle = { font: "inherit", color: "inherit", background: "transparent", padding: "4px 6px", maxWidth: "170px",
                       border: "1px solid rgba(128,128,128,0.6)", borderRadius: "4px" };
    var ctl;
    if (kind === "select") {
      ctl = h("select", {
        value: local, style: inputStyle,
        onChange: function (e) { setLocal(e.target.value); send(e.target.value); },
      }, (view.choices || []).map(function (c) {
        return h("option", { key: c[0], value: c[0], style: { background: "#222" } }, c[1]);
      }));
    } else if (kind === "number") {
      var commit = function (raw) {
        var v = String(raw).trim() === "" ? null : Number(raw);
        if (v !== null && !isFinite(v)) return;
        if ((v === null ? "" : v) !== shown) send(v);
      };
      ctl = h("input", {
        type: "number", step: "any", value: local, placeholder: view.placeholder || "", style: inputStyle,
        onChange: function (e) { setLocal(e.target.value); },
        onBlur: function (e) { commit(e.target.value); },
        onKeyDown: function (e) { if (e.key === "Enter") { commit(e.target.value); e.target.blur(); } },
      });
    } else {
      box.flexDirection = "row";
      box.alignItems = "center";
      ctl = h("input", {
        type: "checkbox", checked: !!local,
        onChange: function (e) { setLocal(e.target.checked); send(e.target.checked); },
      });
      return h("label", { "data-label-grader-control": view.name, style: box }, ctl, cap);
    }
    return h("label", { "data-label-grader-control": view.name, style: box }, cap, ctl);
  }

  plugins.registerComponent({
    name: "LabelGraderControl",
    label: "Label review control",
    component: LabelGraderControl,
    type: plugins.PluginComponentType.Component,
    activator: function () { return true; },
  });

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
