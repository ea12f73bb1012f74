/* songpop live updates: one websocket per page, reconnecting by itself; data is only ever written
   into the page with textContent (never innerHTML), because song names come from outside. */
"use strict";

const songpop = (() => {
  const COMPACT = [[1e9, "B"], [1e6, "M"], [1e3, "K"]];
  const handlers = [];
  const resyncers = [];
  let retryMs = 500;

  function fmtValue(v, signal) {
    if (v === null || v === undefined || v === "") return "\u2014";
    v = Number(v);
    if (signal !== "streams") return Math.min(100, Math.max(0, v)).toFixed(0); // the index is bounded
    v = Math.max(0, v);
    for (const [size, suffix] of COMPACT) {
      if (v < size) continue;
      const scaled = v / size; // about three significant digits: 1.2M, 35.5K, 704K
      return (scaled >= 100 ? scaled.toFixed(0) : scaled.toFixed(1).replace(/\.0$/, "")) + suffix;
    }
    return v.toFixed(0);
  }

  function fmtInterval(cell, signal) {
    if (!cell || cell.lower === null || cell.lower === undefined || cell.upper === null || cell.upper === undefined) return "";
    return fmtValue(cell.lower, signal) + "\u2013" + fmtValue(cell.upper, signal);
  }

  /* Create an element with a class and text content. */
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function setLive(state, text) {
    const badge = document.getElementById("live");
    if (!badge) return;
    badge.dataset.state = state;
    badge.querySelector(".live-text").textContent = text;
  }

  /* A new model became active: say so, with a link to its card (built with textContent only). */
  function showModelNotice(model) {
    const notice = document.getElementById("notice");
    if (!notice) return;
    notice.replaceChildren(
      el("span", null, "A new model is active: " + model.signal + ", " + model.horizon_weeks + " weeks ahead (" + model.version + "). "),
      Object.assign(el("a", null, "See the model card"), { href: "/models" }),
    );
    notice.hidden = false;
  }

  function dispatch(message) {
    if (message.type === "hello") {
      const known = document.body.dataset.event || "";
      if (message.event_id && message.event_id !== known) resyncers.forEach((fn) => fn());
      return;
    }
    if (message.type === "model") {
      showModelNotice(message);
      return;
    }
    if (message.type === "predictions") {
      handlers.forEach((fn) => fn(message));
      const stamp = document.getElementById("last-update");
      if (stamp) stamp.textContent = "updated " + new Date().toLocaleTimeString();
      if (message.event_id) document.body.dataset.event = message.event_id;
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(scheme + "//" + location.host + "/ws");
    socket.onopen = () => { retryMs = 500; setLive("live", "live"); };
    socket.onmessage = (event) => {
      let message;
      try { message = JSON.parse(event.data); } catch (err) { return; }
      dispatch(message);
    };
    socket.onclose = () => {
      setLive("reconnecting", "reconnecting");
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 10000);
    };
  }

  document.addEventListener("DOMContentLoaded", connect);

  return {
    fmtValue, fmtInterval, el,
    /* fn(message) for every predictions message */
    onPredictions(fn) { handlers.push(fn); },
    /* fn() when the page may have missed updates (it should refetch its data) */
    onResync(fn) { resyncers.push(fn); },
  };
})();
