/* equiv parity report: status filters and opening a cell's details from a link.
   Plain DOM, no library; the page is complete and readable without it. */
(function () {
  "use strict";
  var body = document.body;
  var chips = Array.prototype.slice.call(document.querySelectorAll("[data-filter]"));
  var PROBLEMS = ["fail", "error", "timeout", "unknown"];

  function setVisible(status, visible) {
    body.classList.toggle("hide-" + status, !visible);
    chips.forEach(function (chip) {
      if (chip.getAttribute("data-filter") === status) {
        chip.setAttribute("aria-pressed", visible ? "true" : "false");
      }
    });
  }

  chips.forEach(function (chip) {
    chip.addEventListener("click", function () {
      setVisible(chip.getAttribute("data-filter"), chip.getAttribute("aria-pressed") !== "true");
    });
  });

  document.querySelectorAll("[data-only]").forEach(function (button) {
    button.addEventListener("click", function () {
      var all = button.getAttribute("data-only") === "all";
      chips.forEach(function (chip) {
        var status = chip.getAttribute("data-filter");
        setVisible(status, all || PROBLEMS.indexOf(status) >= 0);
      });
    });
  });

  document.querySelectorAll("[data-expand]").forEach(function (button) {
    button.addEventListener("click", function () {
      var open = button.getAttribute("data-expand") === "open";
      document.querySelectorAll("details.cell-detail").forEach(function (d) { d.open = open; });
    });
  });

  /* A link to a cell opens its details (and every <details> around the target). */
  function openTarget() {
    var id = decodeURIComponent(window.location.hash.slice(1));
    var el = id ? document.getElementById(id) : null;
    for (var node = el; node; node = node.parentElement) {
      if (node.tagName === "DETAILS") { node.open = true; }
    }
    if (el) {
      var status = el.getAttribute("data-status");
      if (status && body.classList.contains("hide-" + status)) { setVisible(status, true); }
      el.scrollIntoView();
    }
  }
  window.addEventListener("hashchange", openTarget);
  if (window.location.hash) { openTarget(); }
})();
