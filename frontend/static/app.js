// The console's own JavaScript: small enhancements over pages that work without it.
"use strict";

document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.querySelector(button.dataset.copy);
  if (!source) return;
  try {
    await navigator.clipboard.writeText(source.textContent.trim());
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = label; }, 1500);
  } catch {
    // Without clipboard permission, select the text so the user can copy it by hand.
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }
});

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
    return;
  }
  // A form that takes a while (Replace key tests the new key first) says what it is doing.
  const progress = form.dataset.progress && form.querySelector("[role=status]");
  if (progress) {
    progress.textContent = form.dataset.progress;
    progress.hidden = false;
  }
  // One submission per click: a slow server must not get the form twice. (A form whose
  // checks stream handles its own buttons.)
  if ((form.id === "key-form" || form.classList.contains("replace-form")) && window.fetch && window.ReadableStream) return;
  for (const button of form.querySelectorAll("button[type=submit]")) {
    setTimeout(() => { button.disabled = true; }, 0);
  }
});

// Test Encryption Key (the wizard) and Replace key (a key's page): send the form to its
// streaming endpoint and show each check as the server completes it. Without JavaScript the
// form posts and the page shows the result.
if (window.fetch && window.ReadableStream) {
  const wizard = document.getElementById("key-form");
  if (wizard) streamChecks(wizard, document.getElementById("checklist"), "Creating the key…");
  for (const form of document.querySelectorAll("form.replace-form[data-stream]")) {
    streamChecks(form, form.querySelector(".replace-checklist"), "Starting the change…");
  }
}

function streamChecks(form, box, onward) {
  let submitter = null;
  form.addEventListener("click", (event) => {
    const button = event.target.closest("button[type=submit]");
    if (button) submitter = button;
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const buttons = form.querySelectorAll("button[type=submit]");
    const data = new URLSearchParams(new FormData(form));
    if (submitter && submitter.name) data.set(submitter.name, submitter.value);
    // One test at a time; the buttons come back when the stream ends.
    for (const button of buttons) button.disabled = true;
    for (const old of form.querySelectorAll(".field-error[data-field]")) old.remove();
    for (const field of form.querySelectorAll(".field.invalid")) field.classList.remove("invalid");
    box.replaceChildren(status("Testing the key…"), element("ul", "checklist"));
    const list = box.querySelector("ul");
    const pending = element("li", "check running");
    pending.append(element("span", "check-mark"), element("div", "", "Running the next check…"));
    list.append(pending);
    try {
      const response = await fetch(form.dataset.stream, {
        method: "POST",
        body: data,
        headers: { "content-type": "application/x-www-form-urlencoded", accept: "application/x-ndjson" },
      });
      await eachLine(response, (event) => handle(event, { form, list, pending, box, onward }));
    } catch (error) {
      pending.remove();
      box.prepend(status(`The test could not run: ${error.message}. Try again, or submit without JavaScript.`, "bad"));
    } finally {
      for (const button of buttons) button.disabled = false;
    }
  });
}

function handle(event, { form, list, pending, box, onward }) {
  if (event.type === "waiting") {
    // A fresh grant not propagated yet: the checks run again; show this attempt's wait.
    for (const item of list.querySelectorAll("li:not(.running)")) item.remove();
    for (const old of box.querySelectorAll(".checklist-summary")) old.remove();
    const note = status(event.message, "waiting");
    note.dataset.attempt = event.attempt;
    box.prepend(note);
    return;
  }
  if (event.type === "check") {
    // The server renders each check with the page's own partial; nothing is drawn twice.
    const item = document.createElement("template");
    item.innerHTML = event.html;
    list.insertBefore(item.content, pending);
    return;
  }
  pending.remove();
  box.querySelector(".checklist-summary")?.remove();
  if (event.type === "done" && event.created) {
    box.prepend(status(`Every required check passed. ${onward}`, "ok"));
    window.location.assign(event.location);
  } else if (event.type === "done") {
    const waited = event.waited_seconds ? ` (after waiting ${event.waited_seconds} s for the grant to propagate)` : "";
    box.prepend(status((event.passed ? "Every required check passed." : "Some required checks failed.") + waited, event.passed ? "ok" : "bad"));
  } else {
    box.prepend(status(event.problem || "The request was refused.", "bad"));
    for (const error of event.errors || []) {
      const input = form.querySelector(`[name="${error.field}"]`);
      const field = input?.closest(".field");
      if (field) {
        field.classList.add("invalid");
        const message = element("p", "field-error", error.reason);
        message.dataset.field = error.field;
        field.append(message);
      } else {
        box.append(status(`${error.field}: ${error.reason}`, "bad"));
      }
    }
  }
}

function status(text, kind = "") {
  return element("p", `checklist-summary ${kind}`, text);
}

function element(tag, className = "", text = "") {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  return node;
}

// Check now: while a revocation the first probe saw is being confirmed by a second, say so;
// then go where the form would have gone. Without JavaScript the form posts and waits.
for (const form of document.querySelectorAll("form.check-now[data-stream]")) {
  if (!window.fetch || !window.ReadableStream) break;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    const progress = document.querySelector(".check-progress") || form.appendChild(element("span", "check-progress small"));
    const say = (text, kind = "") => {
      progress.hidden = false;
      progress.textContent = text;
      progress.className = `check-progress ${kind}`.trim();
    };
    say("Checking…");
    try {
      const response = await fetch(form.dataset.stream, {
        method: "POST",
        body: new URLSearchParams(new FormData(form)),
        headers: { "content-type": "application/x-www-form-urlencoded", accept: "application/x-ndjson" },
      });
      await eachLine(response, (message) => {
        if (message.type === "confirming") {
          say(`The KMS answered ${message.seen.replace("_", " ")}: confirming… (a second probe in a few seconds)`, "bad");
        } else if (message.type === "done") {
          window.location.assign(message.location);
        } else {
          say(message.problem || "The check was refused.", "bad");
        }
      });
    } catch (error) {
      say(`The check could not run: ${error.message}. Try again.`, "bad");
    } finally {
      if (button) button.disabled = false;
    }
  });
}

// Reads a newline-delimited JSON answer as it streams in, one parsed event at a time.
async function eachLine(response, onEvent) {
  if (!response.ok) throw new Error(`the console answered ${response.status}`);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let newline;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, newline).trim();
      buffered = buffered.slice(newline + 1);
      if (line) onEvent(JSON.parse(line));
    }
  }
}
