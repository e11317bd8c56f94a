// Playground: chat against /v1/chat/completions (agent mode, streaming). Each tool call appears as it
// starts (name, arguments), then gets its status, latency and a collapsed result; all shown as text.
import { api, stream } from "./api.js";
import { badge, field, fill, fmt, h } from "./dom.js";

function newSession() { return "ui-" + Math.random().toString(36).slice(2, 10); }

export default {
  title: "Playground",
  mount(root, { onError }) {
    const model = h("select", { name: "model" }, h("option", { value: "auto" }, "auto"));
    const user = h("input", { name: "user", value: "dashboard", autocomplete: "off" });
    const sessionId = h("input", { name: "session", value: newSession(), autocomplete: "off" });
    const message = h("textarea", { name: "message", rows: 3, cols: 60, required: true,
      placeholder: "Ask something that needs a tool (Ctrl+Enter sends)" });
    const engine = h("input", { type: "checkbox", name: "reasoning", id: "pg-reasoning" });
    const send = h("button", { type: "submit" }, "Send");
    const stop = h("button", { type: "button", class: "secondary", disabled: true }, "Stop");
    const fresh = h("button", { type: "button", class: "secondary" }, "New conversation");
    const transcript = h("div", { class: "transcript", id: "transcript", "aria-live": "polite" });
    const form = h("form", { class: "row", "aria-label": "Chat" },
      field("Model", model)[0], field("User", user)[0], field("Conversation id", sessionId)[0],
      h("div", { class: "field" }, h("label", { for: "pg-message" }, "Message"), message),
      h("div", { class: "field check" }, h("label", { for: "pg-reasoning" }, "Reasoning engine"),
        h("span", {}, engine, " steps + verdicts")),
      send, stop, fresh);
    message.id = "pg-message";
    let controller = null;

    const calls = new Map();
    function toolStarted(ev) {
      const status = badge("running", "warn");
      const latency = h("span", { class: "hint" });
      const result = h("pre", { class: "result" });
      const card = h("div", { class: "tool", "data-call": ev.id, "data-status": "running" },
        h("div", {}, h("strong", {}, ev.name), " ", status, " ", latency),
        h("div", { class: "hint" }, "Arguments"), h("pre", { class: "args" }, fmt.json(ev.arguments ?? {})),
        h("details", {}, h("summary", {}, "Result"), result));
      calls.set(ev.id, { card, status, latency, result });
      transcript.append(card);
    }
    function toolFinished(ev) {
      const c = calls.get(ev.id);
      if (!c) return;
      c.card.dataset.status = ev.ok ? "ok" : "error";
      fill(c.status, ev.ok ? "ok" : "error");
      c.status.className = "badge " + (ev.ok ? "good" : "bad");
      c.latency.textContent = fmt.ms(ev.latency_ms);
      c.result.textContent = ev.ok ? (ev.result ?? "") : (ev.error || ev.result || "failed");
    }

    // Reasoning engine runs: one box per step; its drafts stream in, a rejected draft stays visible, struck out.
    const steps = new Map();
    let currentStep = null;
    function stepEvent(t) {
      if (t.type === "step_started") {
        const draft = h("span", { class: "draft" });
        const verdict = h("span", { class: "verdict" }, badge("drafting", "warn"));
        const box = h("div", { class: "step", "data-step": t.step, "data-state": "started" },
          h("div", {}, h("strong", {}, "Step " + t.step), " ", verdict), h("div", { class: "drafts" }, draft));
        currentStep = { box, draft, verdict };
        steps.set(t.step, currentStep);
        transcript.append(box);
        return;
      }
      const st = steps.get(t.step);
      if (!st) return;
      const v = t.verdict || {};
      if (t.type === "step_verified") {
        fill(st.verdict, badge(v.ok ? "verified" : "rejected", v.ok ? "good" : "bad"),
          v.reason ? h("span", { class: "hint" }, " " + v.reason) : null);
        st.box.dataset.state = v.ok ? "verified" : "rejected";
      } else if (t.type === "step_revised") {
        st.draft.classList.add("rejected");
        st.draft = h("span", { class: "draft" });
        st.box.querySelector(".drafts").append(h("div", { class: "hint" }, "sent back (attempt " + t.attempt + ")"), st.draft);
        fill(st.verdict, badge("revising", "warn"));
      } else if (t.type === "step_committed") {
        st.box.dataset.state = "committed";
        st.verdict.append(h("span", { class: "hint" }, " · committed in " + fmt.ms(t.latency_ms)));
      }
    }

    async function chat(e) {
      e.preventDefault();
      const text = message.value.trim();
      if (!text) return;
      message.value = "";
      transcript.append(h("div", { class: "msg user" }, h("span", { class: "role" }, "you"), text));
      let answer = null;
      let reasoning = null;
      const answerText = () => {
        if (!answer) {
          answer = h("span", { class: "content" });
          transcript.append(h("div", { class: "msg assistant", "data-final": "pending" }, h("span", { class: "role" }, "assistant"), answer));
        }
        return answer;
      };
      controller = new AbortController();
      send.disabled = true;
      stop.disabled = false;
      calls.clear();
      steps.clear();
      currentStep = null;
      try {
        const res = await stream("v1/chat/completions", {
          model: model.value, stream: true, user: user.value.trim() || undefined,
          metadata: sessionId.value.trim() ? { session_id: sessionId.value.trim() } : undefined,
          messages: [{ role: "user", content: text }],
          toolmesh: engine.checked ? { reasoning: true } : undefined,
        }, { signal: controller.signal });
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let i;
          while ((i = buf.indexOf("\n")) >= 0) {
            const line = buf.slice(0, i).replace(/\r$/, "");
            buf = buf.slice(i + 1);
            if (line.startsWith(": toolmesh ")) {
              const rest = line.slice(11);
              const sp = rest.indexOf(" ");
              const kind = rest.slice(0, sp);
              const data = JSON.parse(rest.slice(sp + 1));
              if (kind === "tool_call_started") toolStarted(data);
              else if (kind === "tool_call_finished") toolFinished(data);
            } else if (line.startsWith("data: ") && line !== "data: [DONE]") {
              const chunk = JSON.parse(line.slice(6));
              if (chunk.error) throw new Error(chunk.error.message || "the stream ended with an error");
              const delta = chunk.choices && chunk.choices[0] ? chunk.choices[0].delta || {} : {};
              if (delta.reasoning_content && currentStep) currentStep.draft.append(delta.reasoning_content);
              else if (delta.reasoning_content) {
                if (!reasoning) { reasoning = h("div", { class: "msg reasoning" }, h("span", { class: "role" }, "reasoning")); transcript.append(reasoning); }
                reasoning.append(delta.reasoning_content);
              }
              if (delta.content) answerText().append(delta.content);
              if (chunk.toolmesh && chunk.toolmesh.type && chunk.toolmesh.type !== "final") {
                if (chunk.toolmesh.type === "warning") transcript.append(h("p", { class: "hint" }, chunk.toolmesh.text || "warning"));
                else stepEvent(chunk.toolmesh);
              } else if (chunk.toolmesh) {
                const t = chunk.toolmesh;
                answerText().parentElement.dataset.final = t.status || "done";
                const parts = [t.status, t.model, t.steps ? t.steps.length + " steps" : t.turns !== undefined ? t.turns + " turns" : null,
                  t.usage ? fmt.int(t.usage.total_tokens) + " tokens" : null, "cost_usd" in t ? fmt.usd(t.cost_usd) : null,
                  t.latency_ms !== undefined ? fmt.ms(t.latency_ms) : null];
                transcript.append(h("p", { class: "hint run-summary" }, parts.filter(Boolean).join(" · ")));
              }
            }
          }
        }
      } catch (err) {
        if (err.name !== "AbortError") {
          transcript.append(h("p", { class: "error", role: "alert" }, err.message || String(err)));
        } else transcript.append(h("p", { class: "hint" }, "Stopped."));
      } finally {
        send.disabled = false;
        stop.disabled = true;
        controller = null;
      }
    }

    form.addEventListener("submit", chat);
    message.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) form.requestSubmit(); });
    stop.addEventListener("click", () => controller && controller.abort());
    fresh.addEventListener("click", () => { sessionId.value = newSession(); fill(transcript); });
    fill(root, h("p", { class: "hint" }, "Runs the agent on this tenant's MCP tools (the key needs the chat scope). " +
      "Tool results and answers are shown as plain text."), form, transcript);

    return {
      live: false,
      async refresh() {
        try {
          const d = await api("v1/models");
          const ids = d.data.map((m) => m.id);
          fill(model, ids.map((id) => h("option", { value: id }, id)));
          model.value = ids.includes("auto") ? "auto" : ids[0];
        } catch (err) {
          fill(model, h("option", { value: "auto" }, "auto"));
          onError(err);
        }
      },
      unmount() { if (controller) controller.abort(); },
    };
  },
};
