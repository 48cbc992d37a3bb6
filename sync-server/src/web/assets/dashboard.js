// caresync dashboard: the only script. Keeps Today live without losing filters, and fills the
// sign-in form from a demo link's #token=... (the fragment never reaches the server or its logs).
(function () {
  "use strict";
  var token = /[#&]token=([0-9a-f]{16,})/.exec(location.hash);
  var field = document.getElementById("token");
  if (token && field) {
    field.value = token[1];
    history.replaceState(null, "", location.pathname);
  }

  // Actions that are hard to undo ask first (forms carrying data-confirm).
  document.querySelectorAll("form[data-confirm]").forEach(function (f) {
    f.addEventListener("submit", function (e) {
      if (!window.confirm(f.getAttribute("data-confirm"))) { e.preventDefault(); }
    });
  });

  // Filters apply as soon as they are changed (the Show button stays for no-script use).
  var filters = document.getElementById("filters");
  if (filters) {
    filters.addEventListener("change", function () { filters.submit(); });
  }

  // Live refresh: fetch this very address (same filters) and swap the live part of the page.
  var live = document.getElementById("live");
  if (live) {
    var seconds = parseInt(live.getAttribute("data-refresh"), 10) || 60;
    setInterval(function () {
      if (document.hidden) { return; }
      fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) {
          if (r.redirected || !r.ok) { throw new Error("signed out or unavailable"); }
          return r.text();
        })
        .then(function (html) {
          var fresh = new DOMParser().parseFromString(html, "text/html");
          ["alerts", "board", "updated"].forEach(function (id) {
            var a = document.getElementById(id), b = fresh.getElementById(id);
            if (a && b) { a.innerHTML = b.innerHTML; }
          });
          var counts = document.querySelector("ul.counts"), fc = fresh.querySelector("ul.counts");
          if (counts && fc) { counts.innerHTML = fc.innerHTML; }
        })
        .catch(function () { /* keep what is shown; the next tick tries again */ });
    }, seconds * 1000);
  }
})();
