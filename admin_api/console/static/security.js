// Security desk: the active alarms and the doors' live states, pushed by the API
// (GET /access/alarms/live?doors=true), acknowledgement with a note (alarms.ack), the e-map
// (an area's floor plan with its doors on it; uploading a plan and placing doors need
// access.write), door modes (lock, free passage, normal: access.write), door commands (open
// once, lock, free passage, normal, now: access.control; docs/access-admin.md) and lockdowns of
// the site or an area, each behind a confirmation dialog (access.lockdown).
"use strict";
document.addEventListener("DOMContentLoaded", async () => {
  if (!OC.requireLogin()) return;
  const $ = (id) => document.getElementById(id);
  const canAck = OC.can("alarms.ack");
  const canWrite = OC.can("access.write");
  const canLock = OC.can("access.lockdown");
  const canControl = OC.can("access.control");
  const alarms = new Map();   // id -> AlarmOut (active: open or acknowledged)
  const doors = new Map();    // door id -> DoorStateOut
  let areas = [];
  let areaMap = null;         // GET /access/areas/{id}/map
  let site = null;            // the tenant's org node (lockdowns)
  let liveState = "";
  let acking = null;          // the alarm the dialog acknowledges

  const areaSelect = $("area");
  const map = $("map");
  const plan = $("plan");

  // Today's times as a time; older ones with their date.
  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return d.toDateString() === new Date().toDateString()
      ? d.toLocaleTimeString(OC.lang(), { hour12: false })
      : d.toLocaleString(OC.lang(), { hour12: false });
  }

  function doorName(id) {
    const d = doors.get(id);
    return d ? d.name : (id === null || id === undefined ? "" : "#" + id);
  }

  // The worst active alarm of a door: "open" before "acknowledged".
  function doorAlarm(doorId) {
    let worst = null;
    for (const a of alarms.values()) {
      if (a.door_id !== doorId) continue;
      if (a.state === "open" && (!worst || worst.state !== "open" || a.id > worst.id)) worst = a;
      else if (!worst) worst = a;
    }
    return worst;
  }

  // -- alarms
  function renderAlarms() {
    const body = document.querySelector("#alarms-table tbody");
    body.textContent = "";
    const list = [...alarms.values()].sort((a, b) => b.id - a.id);
    for (const a of list) {
      const actions = [];
      if (canAck && a.state === "open") {
        actions.push(OC.el("button", { type: "button", "class": "ack",
          "data-i18n": "desk.ack", "aria-describedby": "alarm-" + a.id,
          onclick: () => openAck(a) }));
      }
      body.append(OC.el("tr", { "data-alarm": a.id, "data-state": a.state,
                                "class": a.state === "open" ? "desk-alarm-open" : null }, [
        OC.el("td", { text: when(a.raised_at) }),
        OC.el("td", { id: "alarm-" + a.id, text: OC.label("alarm", a.kind) }),
        OC.el("td", { text: doorName(a.door_id) }),
        OC.el("td", { text: a.card_no ? String(a.card_no) : "" }),
        OC.el("td", { "class": "alarm-state", text: OC.label("alarm_state", a.state) +
                                                   (a.note ? " · " + a.note : "") }),
        OC.el("td", {}, actions),
      ]));
    }
    OC.applyI18n(body);
    $("alarms-table").hidden = list.length === 0;
    OC.message("alarms-message", list.length ? null : "desk.no_alarms");
  }

  // A dialog is modal (Tab stays inside, Escape closes it) and, however it closes, gives the
  // focus back to the control that opened it (a marker, a button), so a keyboard user is
  // where they were.
  function openDialog(dialog) {
    const opener = document.activeElement;
    dialog.addEventListener("close", () => {
      if (opener && opener.isConnected && typeof opener.focus === "function") opener.focus();
    }, { once: true });
    dialog.showModal();
  }

  function openAck(alarm) {
    acking = alarm;
    $("ack-title").textContent = OC.t("desk.ack_title", { id: alarm.id });
    $("ack-what").textContent = OC.label("alarm", alarm.kind) + " · " + doorName(alarm.door_id) +
      (alarm.card_no ? " · " + alarm.card_no : "") + " · " + when(alarm.raised_at);
    $("ack-note").value = "";
    openDialog($("ack-dialog"));
    $("ack-note").focus();
  }

  $("ack-cancel").addEventListener("click", () => $("ack-dialog").close());
  $("ack-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const note = $("ack-note").value.trim();
    if (!note || !acking) return;
    const alarm = acking;
    $("ack-confirm").disabled = true;
    try {
      const out = await OC.api("POST", "/access/alarms/" + alarm.id + "/acknowledge", { note: note });
      // A momentary alarm (a refused card, anti-passback, duress) ends with its
      // acknowledgement: cleared, it leaves the active list; others stay, acknowledged.
      if (out.state === "cleared") alarms.delete(out.id);
      else alarms.set(out.id, out);
      $("ack-dialog").close();
      OC.message("desk-message", "desk.ack_done", { id: out.id }, "ok");
      render();
    } catch (err) {
      $("ack-dialog").close();
      OC.fail("desk-message", err);
    } finally {
      $("ack-confirm").disabled = false;
    }
  });

  // -- doors (table and markers)
  function renderDoors() {
    const body = document.querySelector("#doors-table tbody");
    body.textContent = "";
    const shown = [...doors.values()].filter((d) => !areaMap || d.area_id === areaMap.area_id);
    for (const d of shown) {
      const actions = [];
      if (canWrite) {
        for (const mode of ["locked", "free", "normal"]) {
          actions.push(OC.el("button", { type: "button", "class": "oc-plain mode-" + mode,
            "data-i18n": "desk.set_" + mode, "aria-describedby": "door-" + d.door_id,
            onclick: () => setMode(d, mode) }));
        }
      }
      const alarm = doorAlarm(d.door_id);
      body.append(OC.el("tr", { "data-door": d.door_id }, [
        OC.el("th", { scope: "row", id: "door-" + d.door_id, text: d.name }),
        OC.el("td", { "class": "door-state oc-state-" + d.state,
                      text: OC.label("door_state", d.state) +
                        (alarm ? " · " + OC.label("alarm", alarm.kind) : "") }),
        OC.el("td", { text: OC.t(d.online ? "yes" : "no") }),
        OC.el("td", {}, actions),
      ]));
    }
    OC.applyI18n(body);
    renderControl();
    renderMarkers();
  }

  function renderMarkers() {
    for (const old of map.querySelectorAll(".desk-door")) old.remove();
    if (!areaMap || !areaMap.plan) return;
    for (const place of areaMap.doors) {
      if (place.x === null || place.y === null) continue;
      const d = doors.get(place.door_id);
      const state = d ? d.state : "unknown";
      const alarm = doorAlarm(place.door_id);
      const name = d ? d.name : place.name;
      const text = OC.t("desk.door_marker", { door: name, state: OC.label("door_state", state) }) +
        (alarm ? " · " + OC.label("alarm", alarm.kind) + " (" + OC.label("alarm_state", alarm.state) + ")" : "");
      const marker = OC.el("button", {
        type: "button", "class": "desk-door", "data-door": place.door_id, "data-state": state,
        "data-online": d ? String(d.online) : "false", "data-alarm": alarm ? alarm.state : "none",
        "aria-label": text, title: text,
        style: null });
      marker.style.left = (place.x / 100) + "%";
      marker.style.top = (place.y / 100) + "%";
      marker.addEventListener("click", (ev) => {
        ev.stopPropagation();
        const open = doorAlarm(place.door_id);
        if (open && open.state === "open" && canAck) openAck(open);
        else if (canControl) chooseDoor(place.door_id);
        else OC.message("desk-message", open ? null : "desk.ack_none");
      });
      map.append(marker);
    }
  }

  async function setMode(door, mode) {
    try {
      await OC.api("POST", "/access/doors/" + door.door_id + "/mode", { mode: mode });
      OC.message("desk-message", "desk.mode_set", { door: door.name, mode: OC.t("mode." + mode) }, "ok");
    } catch (err) {
      OC.fail("desk-message", err);
    }
  }

  // -- door commands (access.control): sent to the door at once, at most once; the state is
  // polled until it is final (done, failed, offline, unsupported, expired).
  const controlSelect = $("control-door");
  const FINAL = new Set(["done", "failed", "offline", "unsupported", "expired"]);
  let commanding = null;      // {door, action} the dialog confirms
  let watching = 0;           // the command whose state is shown

  function renderControl() {
    $("door-control").hidden = !canControl || doors.size === 0;
    if (!canControl) return;
    const chosen = controlSelect.value;
    const shown = [...doors.values()].filter((d) => !areaMap || d.area_id === areaMap.area_id);
    const list = shown.length ? shown : [...doors.values()];
    controlSelect.textContent = "";
    for (const d of list) controlSelect.append(OC.el("option", { value: d.door_id, text: d.name }));
    if (chosen && list.some((d) => String(d.door_id) === chosen)) controlSelect.value = chosen;
    const d = doors.get(Number(controlSelect.value));
    $("control-what").textContent = d ? OC.t("desk.door_marker", { door: d.name,
      state: OC.label("door_state", d.state) }) + " · " + OC.t(d.online ? "desk.online" : "desk.offline") : "";
  }

  function chooseDoor(doorId) {
    renderControl();
    if ([...controlSelect.options].some((o) => o.value === String(doorId))) {
      controlSelect.value = String(doorId);
    }
    renderControl();
    $("door-control").scrollIntoView({ block: "nearest" });
    $("cmd-open_once").focus();
  }

  controlSelect.addEventListener("change", renderControl);
  for (const button of document.querySelectorAll("#door-control [data-command]")) {
    button.addEventListener("click", () => {
      const door = doors.get(Number(controlSelect.value));
      if (!door) return;
      const action = button.dataset.command;
      if (action === "normal") { sendCommand(door, action, ""); return; }
      commanding = { door: door, action: action };
      $("cmd-title").textContent = OC.t("desk.cmd_title_" + action, { door: door.name });
      $("cmd-note").value = "";
      $("cmd-dialog").showModal();
      $("cmd-confirm").focus();
    });
  }
  $("cmd-cancel").addEventListener("click", () => $("cmd-dialog").close());
  $("cmd-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    $("cmd-dialog").close();
    if (commanding) sendCommand(commanding.door, commanding.action, $("cmd-note").value.trim());
    commanding = null;
  });

  let lastShown = null;
  function showCommand(out, doorName) {
    lastShown = [out, doorName];
    const box = $("command-state");
    delete box.dataset.i18n;
    delete box.dataset.i18nArgs;
    box.dataset.state = out.state;
    box.dataset.command = String(out.id);
    box.className = "oc-message" + (out.state === "done" ? " oc-ok"
      : FINAL.has(out.state) ? " oc-error" : "");
    box.textContent = OC.t("desk.cmd_state", { door: doorName,
      action: OC.t("desk.cmd_" + out.action), state: OC.t("desk.cmd_state_" + out.state) });
  }

  async function sendCommand(door, action, note) {
    let out;
    try {
      const body = { action: action };
      if (note) body.note = note;
      out = await OC.api("POST", "/access/doors/" + door.door_id + "/commands", body);
    } catch (err) {
      OC.fail("command-state", err);
      return;
    }
    watching = out.id;
    showCommand(out, door.name);
    // The switch settles a command within a few seconds (its ack deadline is 5 s).
    const until = Date.now() + 15000;
    while (!FINAL.has(out.state) && Date.now() < until && watching === out.id) {
      await new Promise((resolve) => setTimeout(resolve, 400));
      try {
        out = await OC.api("GET", "/access/door-commands/" + out.id);
      } catch (err) {
        OC.fail("command-state", err);
        return;
      }
      if (watching === out.id) showCommand(out, door.name);
    }
  }

  // -- the e-map
  async function loadArea(areaId) {
    areaMap = null;
    map.hidden = true;
    plan.removeAttribute("src");
    OC.message("map-message", null);
    if (!areaId) { renderDoors(); return; }
    try {
      areaMap = await OC.api("GET", "/access/areas/" + areaId + "/map");
    } catch (err) {
      OC.fail("map-message", err);
      return;
    }
    $("plan-form").hidden = !canWrite;
    const placeSelect = $("place-door");
    placeSelect.textContent = "";
    for (const d of areaMap.doors) placeSelect.append(OC.el("option", { value: d.door_id, text: d.name }));
    $("place-controls").hidden = !(canWrite && areaMap.plan && areaMap.doors.length);
    if (areaMap.plan) {
      // The image needs the token: fetched, then shown as a data: URL (the page's CSP allows it).
      const r = await fetch("/access/areas/" + areaId + "/plan",
                            { headers: { "Authorization": "Bearer " + OC.token() } });
      if (r.ok) {
        const blob = await r.blob();
        const url = await new Promise((resolve) => {
          const reader = new FileReader();
          reader.onload = () => resolve(reader.result);
          reader.readAsDataURL(blob);
        });
        plan.src = url;
        plan.alt = OC.t("desk.plan_label", { area: areaMap.name });
        map.hidden = false;
      }
    } else {
      OC.message("map-message", "desk.no_plan");
    }
    renderDoors();
  }

  map.addEventListener("click", async (ev) => {
    if (!canWrite || !areaMap || !areaMap.plan || ev.target !== plan) return;
    const box = plan.getBoundingClientRect();
    const x = Math.round(((ev.clientX - box.left) / box.width) * 10000);
    const y = Math.round(((ev.clientY - box.top) / box.height) * 10000);
    const doorId = Number($("place-door").value);
    if (!doorId) return;
    try {
      const out = await OC.api("POST", "/access/doors/" + doorId + "/place",
                               { x: Math.min(10000, Math.max(0, x)), y: Math.min(10000, Math.max(0, y)) });
      const place = areaMap.doors.find((d) => d.door_id === out.door_id);
      if (place) { place.x = out.x; place.y = out.y; }
      OC.message("desk-message", "desk.placed", { door: out.name }, "ok");
      renderMarkers();
    } catch (err) {
      OC.fail("desk-message", err);
    }
  });

  $("plan-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const file = $("plan-file").files[0];
    if (!file || !areaMap) return;
    const bytes = new Uint8Array(await file.arrayBuffer());
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    try {
      await OC.api("POST", "/access/areas/" + areaMap.area_id + "/plan", { image: btoa(binary) });
      OC.message("desk-message", "desk.uploaded", { area: areaMap.name }, "ok");
      await loadArea(areaMap.area_id);
    } catch (err) {
      OC.fail("desk-message", err);
    }
  });

  areaSelect.addEventListener("change", () => loadArea(areaSelect.value));

  // -- lockdowns
  async function loadLockdowns() {
    if (!canLock) return;
    $("lockdown").hidden = false;
    let list = [];
    try {
      list = (await OC.api("GET", "/access/lockdowns")).filter((x) => !x.ended_at);
    } catch (err) {
      OC.fail("lockdown-message", err);
      return;
    }
    const body = document.querySelector("#lockdowns-table tbody");
    body.textContent = "";
    for (const x of list) {
      const area = areas.find((a) => a.id === x.area_id);
      body.append(OC.el("tr", { "data-lockdown": x.id }, [
        OC.el("td", { id: "lockdown-" + x.id,
                      text: area ? area.name : OC.t("desk.lock_whole_site") }),
        OC.el("td", { text: x.reason }),
        OC.el("td", { text: when(x.started_at) }),
        OC.el("td", {}, [OC.el("button", { type: "button", "data-i18n": "desk.lock_end",
          "aria-describedby": "lockdown-" + x.id, onclick: () => endLockdown(x) })]),
      ]));
    }
    OC.applyI18n(body);
    $("lockdowns-table").hidden = list.length === 0;
    OC.message("lockdown-message", list.length ? null : "desk.lock_none");
  }

  let lockArea = null;
  function askLock(area) {
    lockArea = area;
    $("lock-title").textContent = area ? OC.t("desk.lock_title_area", { area: area.name })
                                       : OC.t("desk.lock_title_site");
    $("lock-reason").value = "";
    openDialog($("lock-dialog"));
    $("lock-reason").focus();
  }
  $("lock-site").addEventListener("click", () => askLock(null));
  $("lock-area").addEventListener("click", () => {
    const area = areas.find((a) => String(a.id) === areaSelect.value);
    if (area) askLock(area);
  });
  $("lock-cancel").addEventListener("click", () => $("lock-dialog").close());
  $("lock-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("lock-dialog").close();
    const body = { node_id: site ? site.id : lockArea && lockArea.node_id, reason: $("lock-reason").value };
    if (lockArea) body.area_id = lockArea.id;
    try {
      const out = await OC.api("POST", "/access/lockdowns", body);
      OC.message("desk-message", "desk.locked", { id: out.id }, "ok");
    } catch (err) {
      OC.fail("desk-message", err);
    }
    loadLockdowns();
  });

  async function endLockdown(x) {
    try {
      await OC.api("POST", "/access/lockdowns/" + x.id + "/end");
      OC.message("desk-message", "desk.lock_ended", { id: x.id }, "ok");
    } catch (err) {
      OC.fail("desk-message", err);
    }
    loadLockdowns();
  }

  // -- live: alarms and door states pushed
  function render() { renderAlarms(); renderDoors(); }

  function showState() {
    const box = $("live-state");
    box.dataset.state = liveState;
    box.textContent = liveState === "live" ? OC.t("sales.live")
      : liveState === "reconnecting" ? OC.t("sales.reconnecting") : "";
  }

  OC.stream("/access/alarms/live?doors=true", (name, data) => {
    if (name === "snapshot") {
      alarms.clear();
      for (const a of data) alarms.set(a.id, a);
    } else if (name === "alarm") {
      if (data.state === "cleared") alarms.delete(data.id);
      else alarms.set(data.id, data);
    } else if (name === "doors") {
      doors.clear();
      for (const d of data) doors.set(d.door_id, d);
    } else if (name === "door") {
      doors.set(data.door_id, data);
    }
    render();
  }, (state) => { liveState = state; showState(); });

  document.addEventListener("oc:lang", () => {
    render(); showState(); loadLockdowns();
    if (lastShown) showCommand(lastShown[0], lastShown[1]);
  });

  try {
    areas = await OC.api("GET", "/access/areas");
    if (OC.can("org.read")) {
      const nodes = await OC.api("GET", "/org/nodes");
      site = nodes.find((n) => n.kind === "tenant") || null;
    }
  } catch (err) {
    OC.fail("desk-message", err);
    return;
  }
  $("lock-site").hidden = !site;
  for (const a of areas) areaSelect.append(OC.el("option", { value: a.id, text: a.name }));
  const wanted = OC.params().get("area");
  if (wanted && areas.some((a) => String(a.id) === wanted)) areaSelect.value = wanted;
  if (areas.length === 0) {
    OC.message("map-message", "desk.no_areas");
    $("lock-area").hidden = true;
  } else {
    await loadArea(areaSelect.value);
  }
  loadLockdowns();
});
