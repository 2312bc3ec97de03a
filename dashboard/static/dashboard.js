// The dashboard page: one EventSource on /events?market=ID; the first event carries every round
// of the chosen market, later ones only the new rounds. No framework, nothing fetched from elsewhere.
"use strict";

const state = { market: new URLSearchParams(location.search).get("market"), rounds: [], source: null };
const $ = (id) => document.getElementById(id);
const palette = ["#f9d67a", "#a8d5ff", "#b9f2b4", "#ffb3c1", "#d7c2ff", "#ffd0a8", "#b3f0ee", "#e3e3a1"];
const colours = new Map();

function colour(agent) {
  if (agent === null || agent === undefined) return "transparent";
  if (!colours.has(agent)) colours.set(agent, palette[colours.size % palette.length]);
  return colours.get(agent);
}

const money = (x) => Number(x).toFixed(4);

function cell(row, text, numeric) {
  const td = row.insertCell();
  td.textContent = text;
  if (numeric) td.className = "num";
  return td;
}

function showStatus(update) {
  const badge = $("status");
  if (update === null) {
    badge.dataset.state = "unreachable";
    badge.textContent = "dashboard unreachable: retrying";
  } else if (update.reachable) {
    badge.dataset.state = "live";
    badge.textContent = "live";
  } else {
    badge.dataset.state = "unreachable";
    badge.textContent = "auctioneer unreachable since " + new Date(update.since * 1000).toLocaleTimeString() + ": retrying";
  }
}

function showMarkets(markets, chosen) {
  const body = $("markets").tBodies[0];
  body.replaceChildren();
  for (const market of markets) {
    const row = body.insertRow();
    row.dataset.market = market.id;
    if (market.id === chosen) row.className = "chosen";
    cell(row, market.id);
    cell(row, market.closed ? "closed (" + market.closed + ")" : "open");
    cell(row, market.round, true);
    cell(row, money(market.revenue), true);
    cell(row, market.text.length > 60 ? "…" + market.text.slice(-60) : market.text);
    row.addEventListener("click", () => choose(market.id));
  }
}

function tokenSpan(entry) {
  const span = document.createElement("span");
  span.className = "token";
  span.textContent = entry.token;
  span.dataset.round = entry.round;
  span.dataset.sponsor = entry.sponsor ?? "";
  span.style.background = colour(entry.sponsor);
  span.title = "round " + entry.round + " · " + Object.entries(entry.sponsors)
    .map(([agent, share]) => agent + " " + (100 * share).toFixed(1) + "%").join(", ");
  span.addEventListener("mouseenter", () => showRound(entry, span));
  span.addEventListener("click", () => showRound(entry, span));
  return span;
}

function table(headers, rows) {
  const t = document.createElement("table");
  const head = t.createTHead().insertRow();
  for (const h of headers) head.appendChild(document.createElement("th")).textContent = h;
  const body = t.createTBody();
  for (const r of rows) {
    const row = body.insertRow();
    r.forEach((value, i) => cell(row, value, i > 0));
  }
  return t;
}

function showRound(entry, span) {
  document.querySelectorAll(".token.selected").forEach((s) => s.classList.remove("selected"));
  if (span) span.classList.add("selected");
  $("detail-round").textContent = entry.round + ": " + JSON.stringify(entry.token);
  const detail = $("detail");
  detail.replaceChildren();
  detail.appendChild(table(["sponsor", "share"],
    Object.entries(entry.sponsors).map(([a, s]) => [a, (100 * s).toFixed(1) + "%"])));
  detail.appendChild(table(["aggregate's top tokens", "p"],
    entry.top.map(([t, p]) => [JSON.stringify(t), p.toFixed(3)])));
  detail.appendChild(table(["agent", "bid", "paid"],
    Object.entries(entry.bids).map(([a, b]) => [a, money(b), money(entry.payments[a] ?? 0)])));
}

function showMarket(market, full) {
  $("market-id").textContent = market.id;
  $("market-state").textContent = market.closed ? "closed (" + market.closed + ")"
    : market.open_round ? "round " + market.open_round + " open" : "open";
  const text = $("text");
  if (full) {
    state.rounds = [];
    text.replaceChildren();
    const prompt = document.createElement("span");
    prompt.id = "prompt";
    prompt.className = "prompt";
    prompt.textContent = market.prompt;
    text.appendChild(prompt);
  }
  for (const entry of market.rounds) {
    state.rounds.push(entry);
    if (entry.token !== null) text.appendChild(tokenSpan(entry));
  }
  showAgents(market.balances);
  showRevenue();
}

function showAgents(balances) {
  const lastBid = {};
  for (const entry of state.rounds) Object.assign(lastBid, entry.bids);
  const body = $("agents").tBodies[0];
  body.replaceChildren();
  const agents = new Set([...Object.keys(balances), ...Object.keys(lastBid)]);
  for (const agent of [...agents].sort()) {
    const row = body.insertRow();
    row.dataset.agent = agent;
    const name = cell(row, agent);
    name.style.borderLeft = "6px solid " + colour(agent);
    cell(row, agent in lastBid ? money(lastBid[agent]) : "–", true);
    cell(row, money(balances[agent] ?? 0), true).className = "num paid";
  }
  const legend = $("legend");
  legend.replaceChildren();
  for (const [agent, c] of colours) {
    const item = legend.appendChild(document.createElement("span"));
    item.appendChild(document.createElement("i")).style.background = c;
    item.appendChild(document.createTextNode(agent));
  }
}

function showRevenue() {
  const svg = $("revenue");
  let total = 0;
  const points = state.rounds.map((entry) => {
    total += Object.values(entry.payments).reduce((a, b) => a + b, 0);
    return [entry.round, total];
  });
  $("revenue-total").textContent = points.length ? "total " + money(total) + " over " + points.length + " rounds" : "";
  if (points.length < 2) { svg.replaceChildren(); return; }
  const [r0, r1] = [points[0][0], points[points.length - 1][0]];
  const xy = points.map(([r, v]) => [400 * (r - r0) / Math.max(r1 - r0, 1), 155 - 150 * v / Math.max(total, 1e-12)]);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", xy.map(([x, y]) => x.toFixed(1) + "," + y.toFixed(1)).join(" "));
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", "#1a73e8");
  line.setAttribute("stroke-width", "2");
  line.setAttribute("vector-effect", "non-scaling-stroke");
  svg.replaceChildren(line);
}

function choose(market) {
  state.market = market;
  history.replaceState(null, "", "?market=" + encodeURIComponent(market));
  connect();
}

function connect() {
  if (state.source) state.source.close();
  const source = new EventSource("/events" + (state.market ? "?market=" + encodeURIComponent(state.market) : ""));
  state.source = source;
  source.onmessage = (event) => {
    const update = JSON.parse(event.data);
    showStatus(update);
    if (update.market) state.market = update.market.id;
    showMarkets(update.markets, state.market);
    if (update.market) showMarket(update.market, update.full);
  };
  source.onerror = () => showStatus(null);  // the browser reconnects by itself
}

connect();
