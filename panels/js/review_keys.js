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

  plugins.registerComponent({
    name: "LabelGraderKeys",
    label: "Label review keys",
    component: LabelGraderKeys,
    type: plugins.PluginComponentType.Component,
    activator: function () { return true; },
  });
})();
