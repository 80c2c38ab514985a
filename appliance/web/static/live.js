// solargw live updates: one EventSource on /events, no library.
// The server sends each changed inverter's card (same values the page was rendered with) and the totals.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var cards = document.getElementById("cards");
  var single = document.querySelector("[data-inverter]");
  var template = document.getElementById("card-template");
  var source = null, retryMs = 2000;

  function setState(state, text) {
    if (live) { live.dataset.state = state; live.textContent = text; }
  }

  function ago(ts) {
    if (!ts) { return "never"; }
    var s = Math.max(0, Math.round(Date.now() / 1000 - ts));
    if (s < 90) { return s + " s ago"; }
    if (s < 5400) { return Math.floor(s / 60) + " min ago"; }
    if (s < 172800) { return Math.floor(s / 3600) + " h ago"; }
    return Math.floor(s / 86400) + " days ago";
  }

  function fill(root, card) {
    root.querySelectorAll("[data-key]").forEach(function (el) {
      var key = el.dataset.key, value = card[key];
      if (key === "last_seen") {
        el.dataset.ts = value; el.title = card.last_seen_text; el.textContent = ago(value);
      } else if (key === "alarms") {
        el.hidden = !value.length; el.textContent = value.length ? "⚠ " + value.join(", ") : "";
      } else if (key === "name" && el.tagName === "A") {
        el.textContent = value; el.href = "/inverter/" + encodeURIComponent(card.serial);
      } else if (value !== undefined) {
        el.textContent = value;
        if (key === "state_text") { el.dataset.state = card.state; }
      }
    });
    root.querySelectorAll("[data-field]").forEach(function (el) {
      var text = card.fields[el.dataset.field];
      if (text !== undefined) { el.textContent = text; }
    });
  }

  function onInverter(card) {
    if (single) {
      if (single.dataset.inverter === card.serial) { fill(single, card); }
      return;
    }
    if (!cards) { return; }
    var el = cards.querySelector('[data-serial="' + CSS.escape(card.serial) + '"]');
    if (!el && template) {
      el = template.content.firstElementChild.cloneNode(true);
      el.dataset.serial = card.serial;
      cards.appendChild(el);
      var none = document.getElementById("no-inverters");
      if (none) { none.remove(); }
    }
    if (!el) { return; }
    fill(el, card);
    el.classList.toggle("offline", !card.online);
    el.classList.add("flash-update");
    setTimeout(function () { el.classList.remove("flash-update"); }, 800);
  }

  function onTotals(totals) {
    document.querySelectorAll("[data-total]").forEach(function (el) {
      var value = totals[el.dataset.total];
      if (value !== undefined) { el.textContent = value; }
    });
  }

  function connect() {
    setState("connecting", "Live updates: connecting…");
    source = new EventSource("/events");
    source.onopen = function () { retryMs = 2000; setState("open", "Live: values update as inverters report."); };
    source.addEventListener("inverter", function (e) { onInverter(JSON.parse(e.data)); });
    source.addEventListener("totals", function (e) { onTotals(JSON.parse(e.data)); });
    source.addEventListener("removed", function (e) {
      var el = cards && cards.querySelector('[data-serial="' + CSS.escape(JSON.parse(e.data).serial) + '"]');
      if (el) { el.remove(); }
    });
    source.onerror = function () {
      // The browser reconnects by itself after a normal end; after a refusal (503) it gives up: retry here.
      if (source.readyState === EventSource.CLOSED) {
        setState("closed", "Live updates paused; retrying…");
        setTimeout(connect, retryMs);
        retryMs = Math.min(retryMs * 2, 60000);
      } else {
        setState("connecting", "Live updates: reconnecting…");
      }
    };
  }

  setInterval(function () {
    document.querySelectorAll("time[data-ts]").forEach(function (el) {
      if (el.dataset.ts && el.closest(".card")) { el.textContent = ago(parseFloat(el.dataset.ts)); }
    });
  }, 5000);
  if (window.EventSource) { connect(); } else { setState("closed", "This browser has no live updates: reload to refresh."); }
})();
