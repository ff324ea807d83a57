// The forecast page: draws /api/sites (the overview: where you are, the map, the ranked grid) and
// /api/sites/{id} (a site: today, tomorrow, the next 48 hours), both in UTC, and shows every time
// in UK local time. Plain DOM, no build step, nothing loaded from outside; charts by the vendored uPlot.
"use strict";

const POLLUTANTS = { pm25: "PM2.5", pm10: "PM10", no2: "NO₂", o3: "O₃" };
const BANDS = ["Low", "Moderate", "High", "Very High"];
const UNIT = "µg/m³";
const FEW_FORECASTS = 48;  // skill and coverage from fewer forecasts than this say so
const UK = "Europe/London";
// Towns drawn faintly on the map so that the sites have somewhere to stand (GeoNames coordinates).
const TOWNS = [["London", 51.509, -0.126], ["Birmingham", 52.481, -1.900], ["Manchester", 53.481, -2.237], ["Leeds", 53.797, -1.548],
  ["Newcastle", 54.973, -1.614], ["Glasgow", 55.865, -4.258], ["Edinburgh", 55.953, -3.189], ["Cardiff", 51.480, -3.180],
  ["Belfast", 54.597, -5.930], ["Aberdeen", 57.144, -2.098], ["Plymouth", 50.372, -4.143]];
// Where a town's label goes beside its dot, where the default (right) would run into a neighbour's.
const LABEL_AT = { Glasgow: [-4, 3, "end"], Manchester: [-4, 3, "end"], London: [-10, 18, "start"] };
const UK_FRAME = { south: 49.8, north: 59.5, west: -8.3, east: 1.9 };
const ukTime = new Intl.DateTimeFormat("en-GB", {
  timeZone: UK, weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", timeZoneName: "short",
});
const ukTimeYear = new Intl.DateTimeFormat("en-GB", {
  timeZone: UK, weekday: "short", day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short",
});
const ukYear = new Intl.DateTimeFormat("en-GB", { timeZone: UK, year: "numeric" });
const ukAxisDay = new Intl.DateTimeFormat("en-GB", { timeZone: UK, day: "numeric", month: "short" });
const ukAxisHour = new Intl.DateTimeFormat("en-GB", { timeZone: UK, hour: "2-digit", minute: "2-digit" });
const ukWeekdayHour = new Intl.DateTimeFormat("en-GB", { timeZone: UK, weekday: "short", hour: "2-digit", minute: "2-digit" });
const charts = [];
let overviewData = null;

// Axis labels in UK time, British order: the day at midnight, else the hour.
function axisLabels(u, splits) {
  return splits.map((ts) => {
    const hour = ukAxisHour.format(new Date(ts * 1000));
    return hour === "00:00" ? ukAxisDay.format(new Date(ts * 1000)) : hour;
  });
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  for (const child of children.flat()) if (child) node.append(child instanceof Node ? child : String(child));
  return node;
}

// A time in another year than this one carries its year: "Fri, 1 Aug 2025, 12:00 BST" beside "491 days old".
function fmtTime(iso) {
  if (!iso) return "unknown";
  const t = new Date(iso);
  return (ukYear.format(t) === ukYear.format(new Date()) ? ukTime : ukTimeYear).format(t);
}
function fmtDay(day) {
  const t = new Date(`${day}T12:00:00Z`);
  const sameYear = ukYear.format(t) === ukYear.format(new Date());
  return t.toLocaleDateString("en-GB", { weekday: "short", day: "numeric", month: "short", ...(sameYear ? {} : { year: "numeric" }) });
}
// Concentrations are told to the whole µg/m³: the instruments tell no more.
const fmtNum = (value) => (value === null || value === undefined ? "no value" : String(Math.round(value)));
const bandClass = (name) => `band-${name.toLowerCase().replace(" ", "-")}`;
const bandOf = (index) => BANDS[index >= 10 ? 3 : index >= 7 ? 2 : index >= 4 ? 1 : 0];

function fmtAge(hours) {
  if (hours === null || hours === undefined) return "age unknown";
  if (hours < 1) return "less than an hour old";
  if (hours < 48) return `${Math.round(hours)} hours old`;
  return `${Math.round(hours / 24)} days old`;
}

async function getJSON(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.error ? body.error : `${url} answered HTTP ${response.status}`;
    throw Object.assign(new Error(message), { status: response.status });
  }
  return body;
}

function notice(kind, title, text) {
  return el("div", { class: `notice ${kind}`, "data-state": kind === "error" ? "error" : "warning" }, el("strong", {}, title), text ? el("span", {}, text) : null);
}

function bandChip(index, hourly = false) {
  if (index === null || index === undefined) return el("span", { class: "state" }, "no index");
  const name = bandOf(index);
  return el("span", { class: `band ${bandClass(name)}`, "data-daqi-index": index, "data-daqi-band": name }, `${name} ${index}${hourly ? " (hourly)" : ""}`);
}

// "Moderate likely: 70 %": the odds of the day reaching a band, in words and numbers.
function odds(p) {
  return `${p >= 0.7 ? "likely" : p >= 0.3 ? "possible" : "unlikely"}: ${Math.round(p * 100)} %`;
}

// Where a day's odds come from, for the odds' tooltip.
function oddsSource(d) {
  return d.odds_from === "verified_daily_errors"
    ? `Odds from how far our day-ahead forecasts missed on ${d.odds_site_days} site-days of the last 90`
    : "Odds from the ranges of the hourly forecasts";
}

function dayCell(label, d) {
  if (!d || d.index === null) return el("div", { class: "day", "data-day": d && d.day }, el("span", { class: "state" }, `${label}: no daily index (too few hours)`));
  return el("div", { class: "day", "data-day": d.day, "data-daqi-index": d.index, "data-p-moderate": d.p_moderate_or_above, "data-p-high": d.p_high_or_above },
    el("span", { class: "day-label" }, `${label} ${fmtDay(d.day)}`), " ", bandChip(d.index),
    el("span", { class: "odds", "data-odds-from": d.odds_from, title: oddsSource(d) }, `Moderate or above ${odds(d.p_moderate_or_above)}; High or above ${odds(d.p_high_or_above)}`),
    el("span", { class: "set-by" }, `set by ${POLLUTANTS[d.set_by] || d.set_by}`));
}

function statusNotices(data) {
  const status = document.getElementById("status");
  status.replaceChildren();
  if (!data.model_loaded) {
    status.append(notice("error", "No forecast model is loaded, so there are no forecasts to show.", data.reason ? `Reason: ${data.reason}` : ""));
    return;
  }
  if (data.stale) {
    status.append(notice("warning", "The data is stale.",
      `The newest observation at any site is from ${fmtTime(data.newest_observation)} (${fmtAge(data.age_hours)}). ` +
      `"Today" and "tomorrow" are the days after that hour, not after now.`));
  }
  const stopped = data.sites.filter((s) => s.feed_stopped);
  if (stopped.length) {
    status.append(notice("warning", "Some feeds have stopped.", `No recent observations from ${stopped.map((s) => s.site_name || s.site_id).join(", ")}.`));
  }
  if (data.reason) status.append(notice("warning", "Warning from the service.", data.reason));
  status.append(el("p", { class: "meta" }, `Forecasts from the observations up to ${fmtTime(data.forecast_origin)}; page updated ${fmtTime(data.generated_at)}. `,
    el("button", { type: "button", id: "refresh" }, "Refresh")));
  document.getElementById("refresh").addEventListener("click", route);
}

// What each band means, for people at risk and for everyone else, with Defra's page.
function bandAdvice(data, only = null) {
  const rows = BANDS.filter((b) => !only || only.includes(b)).map((b) => el("tr", { "data-band": b },
    el("th", { scope: "row" }, el("span", { class: `band ${bandClass(b)}` }, b)),
    el("td", {}, data.bands[b].advice.at_risk), el("td", {}, data.bands[b].advice.everyone)));
  return el("table", { class: "advice" },
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Band"), el("th", { scope: "col" }, "With a lung or heart condition, or older"), el("th", { scope: "col" }, "Everyone else"))),
    el("tbody", {}, rows));
}

// ----- the overview: where you are, the map, the ranked grid -----

function siteLabel(site) {
  return site.site_name ? `${site.site_name} (${site.site_id})` : site.site_id;
}

function worstIndex(site) {
  return Math.max(site.today.index || 0, site.tomorrow.index || 0);
}

// Tomorrow's highest index first, then today's, then by name: the site to worry about leads.
function ranked(sites) {
  return [...sites].sort((a, b) => (b.tomorrow.index || 0) - (a.tomorrow.index || 0) || (b.today.index || 0) - (a.today.index || 0) || siteLabel(a).localeCompare(siteLabel(b)));
}

function pollutantCell(p) {
  if (!p.measured) return el("span", { class: "state", "data-state": "not-measured" }, `${POLLUTANTS[p.pollutant]} is not measured at this site.`);
  if (p.feed_stopped) {
    const since = p.newest_observation ? `since ${fmtTime(p.newest_observation)}` : "in the last day of data";
    return el("span", { class: "state stopped", "data-state": "feed-stopped" }, `Feed stopped: no ${POLLUTANTS[p.pollutant]} observation ${since}. No forecast.`);
  }
  if (!p.next_hour) return el("span", { class: "state", "data-state": "no-forecast" }, `No forecast: ${p.problem || "none available"}.`);
  const w = p.worst;
  return el("div", { class: "hour-summary" },
    el("div", { class: "next", "data-time": p.next_hour.time, "data-value": p.next_hour.pred }, "Next hour ", el("strong", { class: "value" }, fmtNum(p.next_hour.pred)), ` ${UNIT} `, bandChip(p.next_hour.index, true)),
    el("div", { class: "peak", "data-time": w.time, "data-value": w.pred }, `Peak in 48 h ${fmtNum(w.pred)} ${UNIT}, ${ukWeekdayHour.format(new Date(w.time))} `, bandChip(w.index, true)));
}

function renderGrid(data) {
  const grid = document.getElementById("grid");
  if (!data.model_loaded) {
    grid.replaceChildren(el("p", { "data-state": "no-model" }, "No forecasts: no model is loaded."));
    return;
  }
  const onlyHigh = document.getElementById("only-high").checked;
  const shown = ranked(data.sites).filter((s) => !onlyHigh || worstIndex(s) >= 7);
  const head = el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Site"), el("th", { scope: "col" }, "Today"), el("th", { scope: "col" }, "Tomorrow"),
    Object.values(POLLUTANTS).map((name) => el("th", { scope: "col" }, name))));
  const rows = shown.map((site) => el("tr", { "data-site": site.site_id },
    el("th", { scope: "row" }, el("a", { href: `#site=${encodeURIComponent(site.site_id)}` }, siteLabel(site)),
      el("span", { class: "site-type" }, site.site_type || "site type unknown"),
      site.feed_stopped
        ? el("span", { class: "site-age stopped", "data-state": "feed-stopped" }, `Feed stopped: newest observation ${fmtTime(site.newest_observation)}`)
        : el("span", { class: "site-age", "data-age-hours": site.age_hours }, `Newest observation ${fmtTime(site.newest_observation)} (${fmtAge(site.age_hours)})`)),
    el("td", { "data-label": "Today", class: "today" }, dayCell("Today", site.today)),
    el("td", { "data-label": "Tomorrow", class: "tomorrow" }, dayCell("Tomorrow", site.tomorrow)),
    site.pollutants.map((p) => el("td", { "data-label": POLLUTANTS[p.pollutant], "data-pollutant": p.pollutant }, pollutantCell(p)))));
  grid.replaceChildren(
    el("p", { class: "meta" }, `${shown.length} of ${data.sites.length} sites, tomorrow's highest index first. Concentrations in ${UNIT}; an hour's band is indicative for PM and O₃, whose index is on a longer mean.`),
    shown.length ? el("table", { class: "grid" }, head, el("tbody", {}, rows)) : el("p", { class: "state", "data-state": "none-high" }, "No site reaches High today or tomorrow."));
}

// The sites on a plain projection of their coordinates (x scaled by the cosine of the UK's middle
// latitude), coloured by tomorrow's band: no tiles, no outline from elsewhere.
function renderMap(data) {
  const box = document.getElementById("map");
  const width = 360, height = 460, mid = Math.cos((54.5 * Math.PI) / 180);
  const sx = width / ((UK_FRAME.east - UK_FRAME.west) * mid), sy = height / (UK_FRAME.north - UK_FRAME.south);
  const scale = Math.min(sx, sy);
  const x = (lon) => (lon - UK_FRAME.west) * mid * scale;
  const y = (lat) => (UK_FRAME.north - lat) * scale;
  const towns = TOWNS.map(([name, lat, lon]) => {
    const [dx, dy, anchor] = LABEL_AT[name] || [4, 3, "start"];
    return svg("g", { class: "town" }, svg("circle", { cx: x(lon).toFixed(1), cy: y(lat).toFixed(1), r: 1.6 }),
      svg("text", { x: (x(lon) + dx).toFixed(1), y: (y(lat) + dy).toFixed(1), "text-anchor": anchor }, name));
  });
  const located = data.sites.filter((s) => s.latitude !== null && s.longitude !== null);
  const dots = ranked(located).reverse().map((s) => {
    const band = s.tomorrow.index ? bandOf(s.tomorrow.index) : null;
    const link = svg("a", { href: `#site=${encodeURIComponent(s.site_id)}`, class: "site-dot", "data-site": s.site_id, "data-band": band || "none" },
      svg("title", {}, `${siteLabel(s)}: tomorrow ${band ? `${band} ${s.tomorrow.index}` : "no index"}`),
      svg("circle", { cx: x(s.longitude).toFixed(1), cy: y(s.latitude).toFixed(1), r: 7, class: band ? bandClass(band) : "band-none" }));
    return link;
  });
  const legend = el("ul", { class: "map-legend" }, BANDS.map((b) => el("li", {}, el("span", { class: `swatch ${bandClass(b)}` }), b)));
  const missing = data.sites.length - located.length;
  box.replaceChildren(
    svg("svg", { viewBox: `0 0 ${Math.round((UK_FRAME.east - UK_FRAME.west) * mid * scale)} ${height}`, role: "img", "aria-label": `Map of ${located.length} sites coloured by tomorrow's band` },
      svg("rect", { class: "sea", x: 0, y: 0, width: "100%", height: "100%" }), towns, dots),
    el("figcaption", {}, "Tomorrow's daily index at each site (select one for its forecast). ", legend,
      missing ? el("span", { class: "state" }, ` ${missing} site(s) without coordinates are not drawn.`) : null));
}

// ----- where you are: a place or the browser's position, the nearest sites, the cleanest hours there -----

async function showNearest(params, label) {
  const box = document.getElementById("near-answer");
  box.dataset.ready = "false";
  const asked = (box.asked = (box.asked || 0) + 1);
  box.replaceChildren(el("p", {}, "Finding the nearest sites…"));
  try {
    const query = new URLSearchParams(params).toString();
    const near = await getJSON(`/api/nearest?${query}&limit=5`);
    const point = { lat: near.latitude, lon: near.longitude };
    const best = await getJSON(`/api/best-time?lat=${point.lat}&lon=${point.lon}&hours=2&within=24`).catch((error) => ({ error }));
    if (asked !== box.asked) return;
    const items = near.sites.map((s) => el("li", { "data-site": s.site_id, "data-distance-km": s.distance_km },
      el("a", { href: `#site=${encodeURIComponent(s.site_id)}` }, siteLabel(s)), ` ${s.distance_km.toFixed(1)} km, ${s.site_type || "site type unknown"}: `,
      "today ", bandChip(s.today.index), ", tomorrow ", bandChip(s.tomorrow.index)));
    box.replaceChildren(
      el("h3", {}, `Sites nearest ${near.place || label}`),
      el("ol", { class: "nearest" }, items),
      el("p", { class: "legend-note" }, near.note),
      best.error ? notice("warning", "No cleanest hours near here.", best.error.message)
        : el("p", { class: "best near-best", "data-site": best.site_id, "data-start": best.best.start },
          el("strong", {}, `Cleanest 2 h in the next 24 h at ${best.site_id} (${best.distance_km.toFixed(1)} km): `), windowText(best.best),
          `; starting now: ${windowText(best.now)}.`));
  } catch (error) {
    if (asked !== box.asked) return;
    box.replaceChildren(notice("warning", "Could not find sites near there.", error.message));
  }
  box.dataset.ready = "true";
}

function placeBox() {
  const input = el("input", { type: "search", id: "place", name: "place", list: "place-names", autocomplete: "off", placeholder: "e.g. Leeds", "aria-describedby": "place-help" });
  const names = el("datalist", { id: "place-names" });
  let typed = 0;
  input.addEventListener("input", async () => {
    const mine = ++typed;
    if (input.value.trim().length < 2) return;
    const found = await getJSON(`/api/places?q=${encodeURIComponent(input.value.trim())}`).catch(() => ({ places: [] }));
    if (mine === typed) names.replaceChildren(...found.places.map((p) => el("option", { value: p.name })));
  });
  const form = el("form", { id: "place-form", role: "search" },
    el("label", { for: "place" }, "Town or place "), input, names, " ", el("button", { type: "submit" }, "Find sites"), " ",
    el("button", { type: "button", id: "locate" }, "Use my location"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (input.value.trim()) showNearest({ place: input.value.trim() }, input.value.trim());
  });
  form.querySelector("#locate").addEventListener("click", () => {
    if (!navigator.geolocation) {
      document.getElementById("near-answer").replaceChildren(notice("warning", "This browser cannot share its position.", "Type a place instead."));
      return;
    }
    navigator.geolocation.getCurrentPosition(
      (pos) => showNearest({ lat: pos.coords.latitude.toFixed(4), lon: pos.coords.longitude.toFixed(4) }, "your position"),
      (error) => document.getElementById("near-answer").replaceChildren(notice("warning", "Your position was not shared.", `${error.message}. Type a place instead.`)),
      { timeout: 10000, maximumAge: 600000 });
  });
  return el("div", {}, form, el("p", { id: "place-help", class: "legend-note" }, "Place names from GeoNames (CC BY 4.0); your position stays in your browser except for the distance query."),
    el("div", { id: "near-answer", role: "status", "aria-live": "polite" }));
}

// ----- a site: today, tomorrow, the next 48 hours -----

function skillText(s) {
  if (!s.hours) return el("p", { class: "skill", "data-skill-hours": 0 }, "Not enough forecasts with observations in the last 7 days to score the model.");
  const verdict = s.skill === null ? "" : s.skill > 0 ? " (better than persistence)" : " (no better than persistence)";
  return el("p", { class: "skill", "data-skill-hours": s.hours, "data-mae-forecast": s.mae_forecast, "data-mae-persistence": s.mae_persistence, "data-skill": s.skill },
    `Recent skill over ${s.hours} hours (${fmtTime(s.first)} to ${fmtTime(s.last)}): average error `,
    el("span", { class: "mae-forecast" }, s.mae_forecast.toFixed(1)), ` ${UNIT}, against `,
    el("span", { class: "mae-persistence" }, s.mae_persistence.toFixed(1)), ` ${UNIT} for persistence; skill `,
    el("span", { class: "skill-value" }, s.skill === null ? "not defined" : s.skill.toFixed(2)), `${verdict}. ` +
    `The observation was inside the forecast range in ${Math.round(s.interval_coverage * 100)}% of these hours.`,
    s.hours < FEW_FORECASTS ? el("strong", { class: "few" }, ` Only ${s.hours} forecasts: too few to judge the model by.`) : null,
    s.interval_coverage < 0.75 || s.interval_coverage > 0.85
      ? el("strong", { class: "coverage-off" }, ` That is outside the 75-85% expected of an 80% range.`) : null);
}

// Columns for uPlot: the last 7 days (observed, past forecasts) then the next 48 hours (forecast, range).
function chartData(data, p) {
  const times = data.times.concat(data.next_times).map((t) => Date.parse(t) / 1000);
  const blank = (n) => new Array(n).fill(null);
  const past = data.times.length, ahead = data.next_times.length;
  return [
    times,
    p.history.observed.concat(blank(ahead)),
    p.history.pred.concat(blank(ahead)),
    blank(past).concat(p.next.pred),
    p.history.lower.concat(p.next.lower),
    p.history.upper.concat(p.next.upper),
  ];
}

// Draws the "now" line (the newest observation) and the lines where the bands begin.
function overlay(origin, bandFrom) {
  return (u) => {
    const { ctx, bbox } = u;
    const scale = devicePixelRatio || 1;
    ctx.save();
    ctx.font = `${12 * scale}px system-ui, sans-serif`;
    ctx.textBaseline = "alphabetic";
    ctx.textAlign = "right";  // band labels end at the plot's right edge, "now" ends at its line
    for (const [name, value] of Object.entries(bandFrom)) {
      if (value > u.scales.y.max) continue;
      const y = u.valToPos(value, "y", true);
      ctx.strokeStyle = getComputedStyle(document.documentElement).getPropertyValue(`--${bandClass(name).slice(5)}-line`) || "#999";
      ctx.setLineDash([2 * scale, 3 * scale]);
      ctx.lineWidth = scale;
      ctx.beginPath(); ctx.moveTo(bbox.left, y); ctx.lineTo(bbox.left + bbox.width, y); ctx.stroke();
      ctx.fillStyle = ctx.strokeStyle;
      ctx.fillText(`${name} from ${Math.round(value)}`, bbox.left + bbox.width - 4 * scale, y - 3 * scale);
    }
    const x = u.valToPos(origin, "x", true);
    ctx.setLineDash([]);
    ctx.strokeStyle = "#1b1f24";
    ctx.lineWidth = 2 * scale;
    ctx.beginPath(); ctx.moveTo(x, bbox.top); ctx.lineTo(x, bbox.top + bbox.height); ctx.stroke();
    ctx.fillStyle = "#1b1f24";
    ctx.fillText("now", x - 4 * scale, bbox.top + bbox.height - 6 * scale);
    ctx.restore();
  };
}

function drawChart(container, data, p) {
  if (typeof uPlot === "undefined") {
    container.append(el("p", { class: "state" }, "The chart library did not load; the numbers are in the table below."));
    return;
  }
  const origin = Date.parse(data.forecast_origin) / 1000;
  const rounded = (u, v) => (v === null || v === undefined ? "–" : `${Math.round(v)}`);
  const options = {
    width: Math.max(container.clientWidth, 280),
    height: 280,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), UK),
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max, p.band_from.Moderate) * 1.08] } },  // Moderate's line always shows
    axes: [{ values: axisLabels, space: 70 }, { label: UNIT, size: 50 }],
    series: [
      { label: "UK time", value: (u, ts) => (ts === null ? "–" : fmtTime(new Date(ts * 1000).toISOString())) },
      { label: "Observed", stroke: "#1b1f24", width: 2, value: rounded },
      { label: "Forecast then", stroke: "#6b7785", width: 1, dash: [4, 4], value: rounded },
      { label: "Forecast", stroke: "#0b57d0", width: 3, value: rounded },
      { label: "Range low", stroke: "rgba(11, 87, 208, 0.5)", width: 1, value: rounded },
      { label: "Range high", stroke: "rgba(11, 87, 208, 0.5)", width: 1, value: rounded },
    ],
    bands: [{ series: [5, 4], fill: "rgba(11, 87, 208, 0.14)" }],
    hooks: {
      draw: [overlay(origin, p.band_from)],
      ready: [(u) => u.setCursor({ left: u.valToPos(origin, "x"), top: 10 })],  // the legend starts at now, not "--"
    },
  };
  charts.push({ chart: new uPlot(options, chartData(data, p), container), container });
}

// The chart's numbers, the next 48 hours first, then the last 7 days, newest first.
function chartTable(data, p) {
  const ahead = data.next_times.map((t, i) => [t, null, p.next.pred[i], p.next.lower[i], p.next.upper[i], "forecast now"])
    .filter((r) => r[2] !== null);
  const past = data.times.map((t, i) => [t, p.history.observed[i], p.history.pred[i], p.history.lower[i], p.history.upper[i],
    p.history.source[i] === "served" ? "served" : p.history.source[i] === "as_of" ? "champion as of that hour" : ""])
    .filter((r) => r[1] !== null || r[2] !== null).reverse();
  const rows = ahead.concat(past).map(([t, obs, pred, lo, hi, made]) => el("tr", { "data-time": t, class: made === "forecast now" ? "ahead" : "" },
    el("td", {}, fmtTime(t)), el("td", {}, obs === null ? "" : fmtNum(obs)), el("td", {}, pred === null ? "no forecast" : fmtNum(pred)),
    el("td", {}, pred === null ? "" : `${fmtNum(lo)} to ${fmtNum(hi)}`), el("td", {}, made)));
  return el("details", {}, el("summary", {}, "The chart's numbers as a table"),
    el("table", { class: "grid numbers" }, el("thead", {}, el("tr", {}, ["Hour", `Observed (${UNIT})`, "Forecast", "Range", "Forecast made"].map((t) => el("th", { scope: "col" }, t)))), el("tbody", {}, rows)));
}

// The cleanest hours for an activity: /api/best-time, in words, beside now and the worst window.
function windowText(w) {
  const values = Object.entries(w.means).map(([p, v]) => `${POLLUTANTS[p]} about ${Math.round(v)}`).join(", ");
  return `${fmtTime(w.start)} to ${ukAxisHour.format(new Date(w.end))}: ${w.band} (${values} ${UNIT})`;
}

async function renderBestTime(box, siteId) {
  const hours = box.querySelector("select[name=hours]").value;
  const within = box.querySelector("select[name=within]").value;
  const answer = box.querySelector(".best-time-answer");
  const asked = (box.asked = (box.asked || 0) + 1);  // only the newest question's answer is shown
  try {
    const data = await getJSON(`/api/best-time?site_id=${encodeURIComponent(siteId)}&hours=${hours}&within=${within}`);
    if (asked !== box.asked) return;
    answer.replaceChildren(
      el("p", { class: "best", "data-start": data.best.start, "data-band": data.best.band }, el("strong", {}, `Cleanest ${hours} h in the next ${within} h: `), windowText(data.best)),
      el("p", { class: "now", "data-start": data.now.start }, "Starting now: ", windowText(data.now)),
      el("p", { class: "worst", "data-start": data.worst.start }, "Worst: ", windowText(data.worst)),
    );
  } catch (error) {
    if (asked !== box.asked) return;
    answer.replaceChildren(notice("warning", "No cleanest hours for this site.", error.message));
  }
  box.dataset.ready = "true";
}

function bestTimeBox(siteId) {
  const choose = (name, label, options, chosen) => el("label", {}, `${label} `,
    el("select", { name }, options.map((o) => el("option", { value: o, selected: o === chosen }, `${o} hours`))));
  const box = el("section", { class: "best-time", "aria-label": "Cleanest hours" }, el("h3", {}, "When to go out"),
    el("form", {}, choose("hours", "Activity", [1, 2, 3], 2), " ", choose("within", "in the next", [24, 48], 24)),
    el("div", { class: "best-time-answer", role: "status", "aria-live": "polite" }, "Finding the cleanest hours…"),
    el("p", { class: "legend-note" }, "Judged by the most polluting pollutant's forecast against where its Moderate band begins; roadside sites read higher than background sites nearby."));
  box.addEventListener("change", () => { box.dataset.ready = "false"; renderBestTime(box, siteId); });
  renderBestTime(box, siteId);
  return box;
}

// Alerts by e-mail or webhook when today's or tomorrow's index at this site is forecast to reach a
// band: POST /api/subscriptions; the service sends a confirmation first (double opt-in).
function alertBox(siteId) {
  const form = el("form", { class: "alert-form" },
    el("label", {}, "Tell me when the day reaches ", el("select", { name: "band" }, ["Moderate", "High", "Very High"].map((b) => el("option", { value: b }, b)))), " ",
    el("label", {}, "by ", el("select", { name: "channel" }, el("option", { value: "email" }, "e-mail"), el("option", { value: "webhook_url" }, "webhook (Slack, Discord, ntfy)"))), " ",
    el("input", { name: "address", type: "text", required: true, autocomplete: "email", "aria-label": "E-mail address or webhook URL", placeholder: "you@example.org or https://..." }), " ",
    el("button", { type: "submit" }, "Subscribe"));
  const answer = el("div", { class: "alert-answer", role: "status", "aria-live": "polite" });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    answer.dataset.ready = "false";
    const body = { sites: [siteId], band: form.band.value, [form.channel.value]: form.address.value.trim() };
    try {
      const response = await fetch("/api/subscriptions", { method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" }, body: JSON.stringify(body) });
      const data = await response.json().catch(() => ({}));
      answer.replaceChildren(response.ok
        ? el("p", { class: "subscribed", "data-status": data.status }, data.message || "Check your messages to confirm.")
        : notice("warning", "Not subscribed.", data.error || `The service answered HTTP ${response.status}.`));
      if (!response.ok) answer.firstChild.dataset.field = data.field || "";
    } catch (error) {
      answer.replaceChildren(notice("warning", "Not subscribed.", error.message));
    }
    answer.dataset.ready = "true";
  });
  return el("section", { class: "alerts", "aria-label": "Alerts" }, el("h3", {}, "Alerts for this site"), form, answer,
    el("p", { class: "legend-note" }, "You confirm from the first message; every alert has a link that removes your address. At most one alert a day, and one more if the band rises."));
}

function siteDays(data) {
  const days = [["Today", data.today], ["Tomorrow", data.tomorrow]];
  const bands = [...new Set(days.filter(([, d]) => d.index !== null).map(([, d]) => bandOf(d.index)))];
  return el("section", { class: "site-days", "aria-label": "Today and tomorrow" },
    el("div", { class: "days" }, days.map(([label, d]) => dayCell(label, d))),
    overviewData ? bandAdvice(overviewData, bands) : null,
    el("p", { class: "legend-note" }, "A day's index runs midnight to midnight, UK time. ",
      el("a", { href: (overviewData && overviewData.daqi_page) || "https://uk-air.defra.gov.uk/air-pollution/daqi" }, "Defra's page on the index and its health advice"), "."));
}

async function renderSite(siteId) {
  const box = document.getElementById("site");
  const title = document.getElementById("site-title");
  title.textContent = siteId;
  box.replaceChildren(el("p", {}, "Loading…"));
  charts.length = 0;
  let data;
  try {
    data = await getJSON(`/api/sites/${encodeURIComponent(siteId)}`);
  } catch (error) {
    const words = error.status === 503 ? "No forecast model is loaded, so this site has no forecasts." : `Could not load this site: ${error.message}`;
    box.replaceChildren(notice("error", words, error.status === 503 ? error.message : ""));
    return;
  }
  title.textContent = siteLabel(data);
  box.replaceChildren(
    el("p", { class: "meta" }, `${data.site_type || "Site type unknown"}. Newest observation ${fmtTime(data.newest_observation)} (${fmtAge(data.age_hours)}).`),
    siteDays(data), bestTimeBox(data.site_id), alertBox(data.site_id));
  for (const p of data.pollutants) {
    const panel = el("section", { class: "pollutant-panel", "data-pollutant": p.pollutant, "aria-label": POLLUTANTS[p.pollutant] }, el("h3", {}, POLLUTANTS[p.pollutant]));
    box.append(panel);
    if (!p.measured || p.feed_stopped || p.problem) panel.append(pollutantCell({ ...p, next_hour: null }));
    if (!p.measured) continue;
    const chart = el("div", { class: "chart", role: "img", "aria-label": `${POLLUTANTS[p.pollutant]} at ${data.site_id}: the last 7 days observed, then the forecast for the next 48 hours with its range` });
    panel.append(el("figure", {}, chart, el("figcaption", { class: "legend-note" },
      `Black: observed. Thick blue after the "now" line (the newest observation): the forecast for the next 48 hours, shaded across its likely range (${Math.round(data.interval * 100)}%). `
      + "Grey dashes: what was forecast for past hours. Dotted lines: where Moderate, High and Very High begin for one hour.")));
    drawChart(chart, data, p);
    panel.append(skillText(p.skill), chartTable(data, p));
  }
}

async function renderOverview() {
  try {
    overviewData = await getJSON("/api/sites");
    statusNotices(overviewData);
    if (overviewData.model_loaded) {
      document.getElementById("advice").replaceChildren(bandAdvice(overviewData),
        el("p", { class: "legend-note" }, el("a", { href: overviewData.daqi_page }, "Defra's page on the index and its health advice"), "."));
      renderMap(overviewData);
    }
    renderGrid(overviewData);
  } catch (error) {
    document.getElementById("status").replaceChildren(notice("error", "Could not load the forecasts.", error.message));
    document.getElementById("grid").replaceChildren();
  }
}

async function route() {
  const match = location.hash.match(/^#site=(.+)$/);
  const grid = document.getElementById("grid-view");
  const site = document.getElementById("site-view");
  await renderOverview();
  if (match) {
    grid.hidden = true;
    site.hidden = false;
    await renderSite(decodeURIComponent(match[1]));
    document.getElementById("site-title").focus();
  } else {
    site.hidden = true;
    grid.hidden = false;
  }
  // Which view is ready, for scripts and tests that follow a navigation.
  document.body.dataset.route = location.hash;
  document.body.dataset.ready = "true";
}

document.getElementById("near").append(placeBox());
document.getElementById("only-high").addEventListener("change", () => overviewData && renderGrid(overviewData));
window.addEventListener("hashchange", () => { document.body.dataset.ready = "false"; route(); });
window.addEventListener("resize", () => {
  for (const { chart, container } of charts) chart.setSize({ width: Math.max(container.clientWidth, 280), height: 280 });
});
route();
