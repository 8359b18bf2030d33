"use strict";
const pad = document.getElementById("pad");
// The server's settings, on the canvas: at most one request this often, and the pen's width.
const THROTTLE_MS = Number(pad.dataset.throttleMs);
const STROKE = Number(pad.dataset.stroke);
const pen = pad.getContext("2d");
const result = document.getElementById("result");
const message = document.getElementById("message");
const prediction = document.getElementById("prediction");
const probability = document.getElementById("probability");
const prepared = document.getElementById("prepared");
const bars = document.getElementById("bars");

let stroke = null;      // the pointer drawing now, and where it was last
let generation = 0;     // Clear starts a new one: answers to older drawings are dropped
let pending = false;    // the canvas changed since it was last sent
let inFlight = false;   // one request at a time
let timer = null;
let lastSent = -Infinity;

function paper() {
  pen.fillStyle = "#fff";
  pen.fillRect(0, 0, pad.width, pad.height);
  pen.strokeStyle = "#000";
  pen.fillStyle = "#000";
  pen.lineWidth = STROKE;
  pen.lineCap = "round";
  pen.lineJoin = "round";
}

function at(event) {
  const box = pad.getBoundingClientRect();
  return [
    (event.clientX - box.left) * pad.width / box.width,
    (event.clientY - box.top) * pad.height / box.height,
  ];
}

function percent(p) {
  return (100 * p).toFixed(p >= 0.995 || p < 0.1 ? 1 : 0) + "%";
}

function emptyResult(text, state) {
  prediction.textContent = "";
  probability.textContent = "";
  bars.replaceChildren();
  prepared.getContext("2d").clearRect(0, 0, prepared.width, prepared.height);
  message.textContent = text;
  result.dataset.state = state;
}

function show(answer) {
  const [name, p] = answer.top;
  prediction.textContent = name;
  probability.textContent = percent(p);
  message.textContent = "";
  const picture = prepared.getContext("2d").createImageData(prepared.width, prepared.height);
  answer.prepared.forEach((row, y) => row.forEach((v, x) => {
    const i = 4 * (y * prepared.width + x);
    picture.data[i] = picture.data[i + 1] = picture.data[i + 2] = v;
    picture.data[i + 3] = 255;
  }));
  prepared.getContext("2d").putImageData(picture, 0, 0);
  bars.replaceChildren(...answer.classes.map((cls, k) => {
    const q = answer.probabilities[k];
    const bar = document.createElement("div");
    bar.className = cls === name ? "bar top" : "bar";
    bar.dataset.class = cls;
    bar.dataset.p = String(q);
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = cls;
    label.title = cls;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = (100 * q).toFixed(1) + "%";
    track.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = percent(q);
    bar.append(label, track, value);
    return bar;
  }));
}

function schedule(now) {
  pending = true;
  result.dataset.state = "busy";
  if (inFlight) return;  // sent again when the answer comes
  if (timer !== null) {
    if (!now) return;
    clearTimeout(timer);
  }
  const wait = now ? 0 : Math.max(0, lastSent + THROTTLE_MS - performance.now());
  timer = setTimeout(send, wait);
}

async function send() {
  timer = null;
  if (!pending) return;
  pending = false;
  inFlight = true;
  lastSent = performance.now();
  const mine = generation;
  let answer = null;
  let error = null;
  try {
    const response = await fetch("predict", {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({image: pad.toDataURL("image/png")}),
    });
    answer = await response.json().catch(() => ({}));
    if (!response.ok) error = answer.detail || `HTTP ${response.status}`;
    else if (!answer.blank && !answer.top) error = "the server's answer holds no prediction";
  } catch (e) {
    error = "no answer from the server: " + e.message;
  }
  inFlight = false;
  if (mine === generation) {
    if (error !== null) emptyResult("error: " + error, "error");
    else if (answer.blank) emptyResult("draw a digit", "blank");
    else show(answer);
  }
  if (pending) schedule(stroke === null);
  else if (mine === generation && error === null) {
    result.dataset.state = answer.blank ? "blank" : "done";
  }
}

pad.addEventListener("pointerdown", (event) => {
  if (event.pointerType === "mouse" && event.button !== 0) return;
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  const [x, y] = at(event);
  stroke = {id: event.pointerId, x, y};
  pen.beginPath();
  pen.arc(x, y, STROKE / 2, 0, 2 * Math.PI);
  pen.fill();
  schedule(false);
});

pad.addEventListener("pointermove", (event) => {
  if (stroke === null || event.pointerId !== stroke.id) return;
  event.preventDefault();
  const moves = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const move of moves.length ? moves : [event]) {
    const [x, y] = at(move);
    pen.beginPath();
    pen.moveTo(stroke.x, stroke.y);
    pen.lineTo(x, y);
    pen.stroke();
    stroke.x = x;
    stroke.y = y;
  }
  schedule(false);
});

function endStroke(event) {
  if (stroke === null || event.pointerId !== stroke.id) return;
  stroke = null;
  schedule(true);
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

document.getElementById("clear").addEventListener("click", () => {
  generation += 1;
  pending = false;
  stroke = null;
  if (timer !== null) clearTimeout(timer);
  timer = null;
  paper();
  emptyResult("draw a digit", "empty");
});

paper();
emptyResult("draw a digit", "empty");
