"""SIMULATED replies for the support-desk example: both sides of a dual-control conversation.

A test double, not a model: `reply(request)` gets an OpenAI chat-completions request body
and plays the support agent (a decision procedure following policy.md) or the customer (who
reveals what the task says they know, confirms, runs phone tools when asked and ends with a
###...### token). It keys only on what the conversation says (the customer's words, tool
results), never on task ids, so held-out tasks of the same kinds work too.

The agent is deliberately imperfect, decided once per conversation from the request's seed
and the customer's first message: in about a fifth of conversations its first lookup is a
malformed tool call (an error it then recovers from), and in about a fifth it is sloppy
(leaves out a figure it should state, skips a step, or takes a wrong path), so a run's mean
reward lands well below 1.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

TOOL_ERROR_RATE = 0.2
SLOPPY_RATE = 0.22
CONFIRM = "Shall I go ahead?"
CLOSING = "Is there anything else I can help you with?"
WRITES = (
    "make_payment",
    "resume_line",
    "enable_roaming",
    "disable_roaming",
    "add_data_topup",
    "change_plan",
)
PHONE = re.compile(r"\b\d{3}-\d{4}\b")


def reply(request: dict[str, Any]) -> str | dict[str, Any]:
    """The next turn of whichever side `request` is for (told apart by prompt and tools)."""
    messages = request.get("messages") or []
    system = next((str(m.get("content") or "") for m in messages if m.get("role") == "system"), "")
    tools = {(t.get("function") or {}).get("name") for t in request.get("tools") or []}
    if "playing a customer" in system or (
        "check_status_bar" in tools and "find_customer_by_phone" not in tools
    ):
        return Customer(system, messages).reply()
    return Agent(messages, request.get("seed")).reply()


# --- reading a conversation -------------------------------------------------------------------
class Event:
    """One item of the conversation, from the speaker's side.

    `kind`: "in" (the other party's text), "out" (own text), "call" or "result" (a tool's).
    """

    def __init__(
        self,
        kind: str,
        text: str = "",
        name: str = "",
        args: dict[str, Any] | None = None,
        ok: bool = True,
        data: Any = None,
    ):
        self.kind, self.text, self.name = kind, text, name
        self.args, self.ok, self.data = args or {}, ok, data


def _args(raw: Any) -> dict[str, Any]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError:
            return {}
    return raw if isinstance(raw, dict) else {}


def _events(messages: list[dict[str, Any]]) -> list[Event]:
    """The conversation from the speaker's side: `user` messages are the other party."""
    calls: dict[str, tuple[str, dict[str, Any]]] = {}
    out: list[Event] = []
    for m in messages:
        role, content = m.get("role"), m.get("content")
        text = content if isinstance(content, str) else ""
        if role == "user":
            out.append(Event("in", text))
        elif role == "assistant":
            if text:
                out.append(Event("out", text))
            for c in m.get("tool_calls") or []:
                fn = c.get("function") or {}
                name, args = str(fn.get("name") or ""), _args(fn.get("arguments"))
                calls[str(c.get("id"))] = (name, args)
                out.append(Event("call", name=name, args=args))
        elif role == "tool":
            name, args = calls.get(str(m.get("tool_call_id")), (str(m.get("name") or ""), {}))
            ok = not text.startswith("Error")
            try:
                data = json.loads(text) if ok else text
            except json.JSONDecodeError:
                data = text
            out.append(Event("result", text, name, args, ok, data))
    return out


def _money(x: float) -> str:
    return f"${x:,.2f}"


def _month(period: str) -> str:
    months = "January February March April May June July August September October November"
    names = (months + " December").split()
    year, month = period.split("-")
    return f"{names[int(month) - 1]} {year}"


# --- the support agent -------------------------------------------------------------------
INTENTS = (
    (
        "transfer",
        r"cancel|terminate|close my account|dispute|refund|do not recogni[sz]e|"
        r"don't recogni[sz]e|stolen|lost my phone",
    ),
    (
        "out_of_scope",
        r"home internet|broadband|fib(er|re)\b|\btv\b|buy(ing)? a (new )?phone|"
        r"new phone|repair|cracked|accessor|landline",
    ),
    (
        "plan",
        r"(change|switch|upgrade|downgrade|move)\b.{0,40}\bplan\b|\bplan\b.{0,20}(change|switch)",
    ),
    (
        "troubleshoot",
        r"no service|no signal|not work|doesn't work|does not work|stopped|"
        r"can't|cannot|no internet|won't connect|no bars",
    ),
    ("topup", r"top.?up|extra data|more data|add \d+ ?gb"),
    ("roaming", r"roaming|travel|trip|abroad|going to|flying to"),
    ("bill_pay", r"\bpay\b"),
    ("bill", r"\bbill|\bowe\b|balance|how much"),
)
ABROAD = re.compile(r"abroad|holiday|vacation|trip|travel|overseas", re.I)
WANTS_DATA = re.compile(r"data|internet|apps?\b|brows|maps|email|online", re.I)
YES = re.compile(r"\b(yes|yeah|sure|go ahead|please do|okay|ok|confirm(ed)?)\b", re.I)
NO = re.compile(r"^\s*(no|nope)\b|\bdon't\b|\bdo not\b|not now|\blater\b|no thanks", re.I)


class Say:
    """A text turn."""

    def __init__(self, text: str):
        self.text = text


class Call:
    """A tool-call turn."""

    def __init__(self, name: str, args: dict[str, Any]):
        self.name, self.args = name, args


class Agent:
    """Policy as a decision procedure, recomputed from the whole history at every turn."""

    def __init__(self, messages: list[dict[str, Any]], seed: Any):
        self.events = _events(messages)
        said = [e.text for e in self.events if e.kind == "in"]
        self.said = said
        self.first = said[0] if said else ""
        rng = random.Random(f"{seed}:{self.first}")
        self.mistake = (
            rng.choice(["unknown_tool", "wrong_argument", "wrong_type"])
            if rng.random() < TOOL_ERROR_RATE
            else None
        )
        self.sloppy = rng.random() < SLOPPY_RATE
        self.errors = sum(1 for e in self.events if e.kind == "result" and not e.ok)

    # facts from the history -----------------------------------------------------------------
    @property
    def intent(self) -> str:
        text = self.first.lower()
        for name, pattern in INTENTS:
            if re.search(pattern, text):
                return name
        return "unknown"

    def result(self, name: str) -> Event | None:
        """The last successful result of a tool."""
        return next(
            (e for e in reversed(self.events) if e.kind == "result" and e.name == name and e.ok),
            None,
        )

    def index(self, event: Event | None) -> int:
        return -1 if event is None else self.events.index(event)

    def done(self, name: str, **match: Any) -> bool:
        return any(
            e.kind == "result"
            and e.ok
            and e.name == name
            and all(e.args.get(k) == v for k, v in match.items())
            for e in self.events
        )

    def failed(self, name: str, **match: Any) -> int:
        return sum(
            1
            for e in self.events
            if e.kind == "result"
            and not e.ok
            and e.name == name
            and all(e.args.get(k) == v for k, v in match.items())
        )

    def asked(self, phrase: str) -> int:
        return sum(1 for e in self.events if e.kind == "out" and phrase in e.text)

    def line(self) -> dict[str, Any] | None:
        """The line as last read, with the agent's own later writes applied."""
        got = self.result("get_line")
        if got is None:
            return None
        line = dict(got.data)
        for e in self.events[self.index(got) + 1 :]:
            if e.kind != "result" or not e.ok:
                continue
            if e.name == "resume_line":
                line.update(status="active", suspension_reason=None)
            elif e.name == "enable_roaming":
                line["roaming_enabled"] = True
            elif e.name == "add_data_topup":
                n = int(e.data["added_gb"])
                line["topup_gb_this_month"] += n
                line["topup_gb_left_this_month"] -= n
                line["data_allowance_gb"] += n
            elif e.name == "change_plan":
                line["plan_id"] = e.data["plan_id"]
        return line

    def report(self) -> dict[str, str] | None:
        """The customer's latest status-bar report, if no write happened after it."""
        for i in range(len(self.events) - 1, -1, -1):
            e = self.events[i]
            if e.kind == "result" and e.ok and e.name in WRITES:
                return None
            if e.kind == "in" and "status bar shows" in e.text.lower():
                found = dict(
                    re.findall(r"([a-z ]+): ([^;.]+)", e.text.lower().split("shows", 1)[1])
                )
                return {k.strip(): v.strip() for k, v in found.items()}
        return None

    # the turn ----------------------------------------------------------------------------
    def reply(self) -> str | dict[str, Any]:
        step = self.decide()
        if isinstance(step, Say):
            return step.text
        return {"tool_calls": [{"name": step.name, "arguments": step.args}]}

    def call(self, name: str, **args: Any) -> Call:
        """A tool call, or on a mistake-prone conversation its malformed first attempt."""
        if self.errors == 0 and self.mistake is not None:
            if self.mistake == "unknown_tool" and name == "find_customer_by_phone":
                return Call("lookup_customer", {"phone": args["phone_number"]})
            if self.mistake == "wrong_argument" and name == "find_customer_by_phone":
                return Call(name, {"phone": args["phone_number"]})
            if self.mistake == "wrong_type" and name == "get_line":
                return Call(name, {"line_id": int(args["line_id"].split("-")[1])})
        return Call(name, args)

    def decide(self) -> Say | Call:
        intent = self.intent
        if intent == "out_of_scope":
            return Say(
                "I'm sorry, but that is outside what this support desk handles: we can only help "
                "with Bluewave Mobile lines, plans, data and bills. " + CLOSING
            )
        phone = next((m[0] for t in self.said for m in [PHONE.search(t)] if m), None)
        name = next(
            (
                m[1]
                for t in self.said
                for m in [re.search(r"[Nn]ame is ([^,.;!?]+?)(?: and|[,.;!?]|$)", t)]
                if m
            ),
            None,
        )
        if phone is None or name is None:
            return Say(
                "I can help with that. First, could you give me the phone number of the line "
                "and your full name?"
            )
        found = self.result("find_customer_by_phone")
        if found is None:
            if self.failed("find_customer_by_phone", phone_number=phone) >= 1:
                return Say(
                    f"I couldn't find a customer with the number {phone}. I can't access an "
                    "account without it. " + CLOSING
                )
            return self.call("find_customer_by_phone", phone_number=phone)
        if found.data["name"].lower() != name.strip().lower():
            return Say(
                "I'm sorry, the name you gave does not match the account of that number, so I "
                "can't access it. " + CLOSING
            )
        line = self.line()
        if line is None:
            return self.call("get_line", line_id=found.data["line_id"])
        handler = {
            "transfer": self.transfer,
            "plan": self.plan,
            "troubleshoot": self.troubleshoot,
            "topup": self.topup_request,
            "roaming": self.roaming_request,
            "bill_pay": self.bill_pay,
            "bill": self.bill_question,
        }.get(intent)
        if handler is None:
            if self.asked("what you need help with"):
                return self.transfer(line)
            return Say("Could you tell me a bit more about what you need help with?")
        return handler(line)

    # writes behind a confirmation -----------------------------------------------------------
    def confirmed(self, keys: list[str]) -> bool | None:
        """True/False: the last proposal covering `keys` was accepted/refused; None: not asked."""
        for i in range(len(self.events) - 1, -1, -1):
            e = self.events[i]
            if e.kind == "out" and CONFIRM in e.text:
                if not all(k in e.text for k in keys):
                    return None
                answer = next((x.text for x in self.events[i + 1 :] if x.kind == "in"), None)
                if answer is None:
                    return None
                if NO.search(answer):
                    return False
                return bool(YES.search(answer)) or None
        return None

    def writes(
        self, todo: list[tuple[str, dict[str, Any], str]], proposal: str, declined: str
    ) -> Say | Call | None:
        """Propose the writes still to do, then run them one by one; None once all are done."""
        todo = [w for w in todo if not self.done(w[0], **w[1])]
        if not todo:
            return None
        name, args, _ = todo[0]
        if self.failed(name, **args) >= 2:
            return self.transfer(self.line() or {})
        answer = self.confirmed([key for _, _, key in todo])
        if answer is True:
            return self.call(name, **args)
        if answer is False:
            return Say(declined)
        return Say(proposal)

    # helpers needing more reads -----------------------------------------------------------
    def method(self) -> Say | Call | dict[str, Any]:
        """The payment method to use: a read, a question, or the method."""
        customer = self.result("get_customer")
        if customer is None:
            return self.call(
                "get_customer",
                customer_id=self.result("find_customer_by_phone").data["customer_id"],
            )
        methods = customer.data["payment_methods"]
        for text in self.said:
            for m in methods:
                if m["last4"] in text:
                    return m
        if len(methods) == 1:
            return methods[0]
        listed = " or ".join(f"{_kind(m)} ending in {m['last4']}" for m in methods)
        return Say(f"Which payment method would you like to use: your {listed}?")

    def bills(self) -> list[dict[str, Any]] | Call:
        """The bills as first read (statuses before this conversation's payments)."""
        got = self.result("get_bills")
        if got is None:
            cid = self.result("find_customer_by_phone").data["customer_id"]
            return self.call("get_bills", customer_id=cid)
        return list(got.data)

    def amount(self, x: float) -> str:
        return "" if self.sloppy else f" of {_money(x)}"

    # intents --------------------------------------------------------------------------------
    def transfer(self, line: dict[str, Any]) -> Say | Call:
        if self.intent == "transfer" and self.sloppy:
            return Say(
                "Requests like this are handled by another team; please call 611 from your "
                "phone and they will take care of it. " + CLOSING
            )
        if not self.done("transfer_to_human_agents"):
            summary = f"Customer on line {line.get('line_id', '?')}: {self.first[:160]}"
            return Call("transfer_to_human_agents", {"summary": summary})
        return Say(
            "This needs a colleague from our human support team. You are being transferred to a "
            "human agent now; please hold on."
        )

    def pay_overdue_then(
        self,
        line: dict[str, Any],
        after: list[tuple[str, dict[str, Any], str]],
        what: str,
        declined: str,
    ) -> Say | Call | None:
        """Pay every overdue bill (after explaining them), then the writes `after`."""
        bills = self.bills()
        if isinstance(bills, Call):
            return bills
        overdue = [b for b in bills if b["status"] == "overdue"]
        if not overdue:
            return None
        method = self.method()
        if not isinstance(method, dict):
            return method
        listed = ", ".join(
            f"bill {b['bill_id']} ({_month(b['period'])}){self.amount(b['amount'])}"
            for b in overdue
        )
        total = sum(b["amount"] for b in overdue)
        todo = [("make_payment", _payment(b, method), b["bill_id"]) for b in overdue] + after
        several = len(overdue) > 1
        proposal = (
            f"{what} The overdue bill{'s are' if several else ' is'} {listed}. I can pay "
            f"{'them' if several else 'it'} in full{self.amount(total) if several else ''} "
            f"with your {_kind(method)} ending in {method['last4']}"
            + "".join(f" and then {key}" for _, _, key in after)
            + f". {CONFIRM}"
        )
        return self.writes(todo, proposal, declined)

    def troubleshoot(self, line: dict[str, Any]) -> Say | Call:
        lid = line["line_id"]
        if line["status"] == "suspended":
            if line.get("suspension_reason") != "overdue_bill":
                return self.transfer(line)
            step = self.pay_overdue_then(
                line,
                [("resume_line", {"line_id": lid}, f"resume line {lid}")],
                f"Your line {lid} is suspended because of an overdue bill.",
                "Understood. Your line stays suspended until the overdue bill is paid. " + CLOSING,
            )
            if step is not None:
                return step
            line = self.line() or line
        wants_data = bool(WANTS_DATA.search(" ".join(self.said[:1])))
        if wants_data and line["data_used_gb"] >= line["data_allowance_gb"]:
            step = self.topup(line, troubleshooting=True)
            if step is not None:
                return step
        report = self.report()
        check = "Could you please check your phone's status bar and tell me what it shows?"
        if report is None:
            return Say(
                check
                if not self.events or self.events[-1].kind != "result"
                else f"Thank you, that is done. {check}"
            )
        signal = report.get("signal", "")
        abroad = bool(ABROAD.search(" ".join(self.said)))
        then = " and tell me what the status bar shows."
        phone_setting = (
            "no sim" in signal
            or report.get("airplane mode") == "on"
            or (wants_data and report.get("mobile data") == "off")
        )
        if self.sloppy and phone_setting and not abroad:  # misses the clue, escalates
            return self.transfer(line)
        if "no sim" in signal:
            if self.asked("SIM card out") >= 2:
                return self.transfer(line)
            return Say(
                "Your phone does not detect the SIM card. Please take the SIM card out, put it "
                "back in firmly" + then
            )
        if report.get("airplane mode") == "on":
            return Say("Airplane mode is on. Please turn airplane mode off" + then)
        if "no service" in signal:
            if abroad and not line.get("roaming_enabled"):
                step = self.writes(
                    [("enable_roaming", {"line_id": lid}, f"enable roaming on line {lid}")],
                    f"You are abroad and roaming is not enabled on line {lid}. I can enable "
                    f"roaming on line {lid}; it costs{self.amount(8.0) or ' a daily fee'} per "
                    f"day used abroad. {CONFIRM}",
                    "Understood, I won't enable roaming; without it your phone has no service "
                    "abroad. " + CLOSING,
                )
                if step is not None:
                    return step
            if self.asked("Please restart your phone") == 0:
                return Say("Please restart your phone" + then)
            return self.transfer(line)
        if wants_data and report.get("data connection") == "none":
            if report.get("mobile data") == "off":
                return Say(
                    "Mobile data is switched off on your phone. Please turn mobile data on" + then
                )
            if abroad and report.get("data roaming") == "off" and not self.sloppy:
                return Say(
                    "Your phone's data roaming setting is off. Please turn data roaming on" + then
                )
            if self.asked("Please restart your phone") == 0 and not (abroad and self.sloppy):
                return Say("Please restart your phone" + then)
            if not (abroad and self.sloppy):
                return self.transfer(line)
        working = (
            " and mobile data is working"
            if report.get("data connection") not in (None, "none")
            else ""
        )
        return Say(
            f"Your phone now shows {report.get('signal', 'a signal')}{working}, so it should "
            f"work normally. {CLOSING}"
        )

    def topup(self, line: dict[str, Any], *, troubleshooting: bool = False) -> Say | Call | None:
        lid, left = line["line_id"], line["topup_gb_left_this_month"]
        done = [
            e for e in self.events if e.kind == "result" and e.ok and e.name == "add_data_topup"
        ]
        if done:
            if troubleshooting:
                return None
            n = done[-1].data["added_gb"]
            return Say(
                f"Done: {n} GB were added to line {lid}; your allowance this month is now "
                f"{done[-1].data['data_allowance_gb']} GB. {CLOSING}"
            )
        used = (
            f"You have used {line['data_used_gb']} GB of your {line['data_allowance_gb']} GB "
            "this month."
        )
        if left <= 0 and self.sloppy:
            return Say(
                f"You have reached this month's top-up limit, so I can't add more data. {CLOSING}"
            )
        if left <= 0:
            return Say(
                f"{used} You have already added 5 GB of top-ups this month, the maximum of 5 GB "
                "per line per month, so I can't add more data. A plan with more data would avoid "
                f"this in the future. {CLOSING}"
            )
        want = None
        for text in self.said:
            if "status bar" not in text.lower():
                found = re.findall(r"(\d+)\s*GB", text, flags=re.I)
                want = int(found[-1]) if found else want
        if want is None:
            if self.asked("How many GB"):
                want = 1
            else:
                return Say(
                    f"{used if troubleshooting else ''} How many GB would you like to add? "
                    f"Top-ups are 1 to {left} GB this month at $2.00 per GB, charged to your "
                    "next bill.".strip()
                )
        n = left if self.sloppy else min(want, left)
        cap = (
            f"You can add at most {left} more GB this month (the limit is 5 GB of top-ups "
            "per month). "
            if want > left
            else ""
        )
        return self.writes(
            [("add_data_topup", {"line_id": lid, "gigabytes": n}, f"add {n} GB")],
            f"{cap}I can add {n} GB of data to line {lid} for {_money(2.0 * n)}, charged to your "
            f"next bill. {CONFIRM}",
            "Understood, I haven't added any data. " + CLOSING,
        )

    def topup_request(self, line: dict[str, Any]) -> Say | Call:
        step = self.topup(line)
        assert step is not None
        return step

    def roaming_request(self, line: dict[str, Any]) -> Say | Call:
        lid = line["line_id"]
        if line.get("roaming_enabled") and not self.done("enable_roaming"):
            return Say(f"Roaming is already enabled on line {lid}, so you are all set. {CLOSING}")
        step = self.writes(
            [("enable_roaming", {"line_id": lid}, f"enable roaming on line {lid}")],
            f"I can enable roaming on line {lid} before your trip. It costs"
            f"{self.amount(8.0) or ' a daily fee'} per day you use your phone abroad. {CONFIRM}",
            "Understood, roaming stays off. " + CLOSING,
        )
        if step is not None:
            return step
        return Say(
            f"Roaming is now enabled on line {lid}. If you need mobile data abroad, you can also "
            f"enable data roaming in your phone's settings when you arrive. {CLOSING}"
        )

    def plan(self, line: dict[str, Any]) -> Say | Call:
        plans = self.result("list_plans")
        if plans is None:
            return self.call("list_plans")
        current = self.result("get_line").data["plan_id"]  # before any change of ours
        wanted = None
        for text in self.said:
            for p in plans.data:
                if p["plan_id"] != current and (
                    p["name"].lower() in text.lower() or p["plan_id"] in text
                ):
                    wanted = p
        if wanted is None:
            offer = "; ".join(
                f"{p['name']} ({_money(p['monthly_price'])} a month, {p['data_gb']} GB)"
                for p in plans.data
            )
            return Say(f"Which plan would you like? We offer: {offer}.")
        lid = line["line_id"]
        price = "" if self.sloppy else f"{_money(wanted['monthly_price'])} a month, "
        change = (
            "change_plan",
            {"line_id": lid, "plan_id": wanted["plan_id"]},
            f"move line {lid} to {wanted['name']} ({price}{wanted['data_gb']} GB) from today",
        )
        if not self.done("change_plan"):
            bills = self.bills()
            if isinstance(bills, Call):
                return bills
            overdue = [b for b in bills if b["status"] == "overdue"]
            listed = ", ".join(f"{b['bill_id']}{self.amount(b['amount'])}" for b in overdue)
            step = self.pay_overdue_then(
                line,
                [change],
                "Plan changes are not allowed while a bill is overdue.",
                f"Understood. I can't change your plan while bill {listed} is overdue; you can pay "
                f"it and then contact us again. {CLOSING}",
            )
            if step is None:
                step = self.writes(
                    [change],
                    f"I can {change[2]}. {CONFIRM}",
                    f"Understood, your plan stays as it is. {CLOSING}",
                )
            if step is not None:
                return step
        cost = "" if self.sloppy else f", {_money(wanted['monthly_price'])} a month"
        return Say(f"Done: line {lid} is now on {wanted['name']}{cost}. {CLOSING}")

    def bill_question(self, line: dict[str, Any]) -> Say | Call:
        bills = self.bills()
        if isinstance(bills, Call):
            return bills
        if self.sloppy:
            latest = bills[-1]
            return Say(f"Your latest bill is {_money(latest['amount'])}. {CLOSING}")
        listed = "; ".join(
            f"{_month(b['period'])} (bill {b['bill_id']}): {_money(b['amount'])}, {b['status']}"
            + (f", due {b['due_date']}" if b["status"] != "paid" else "")
            for b in bills
        )
        return Say(f"Here are your bills: {listed}. {CLOSING}")

    def bill_pay(self, line: dict[str, Any]) -> Say | Call:
        bills = self.bills()
        if isinstance(bills, Call):
            return bills
        payable = [b for b in bills if b["status"] == "overdue"] or [
            b for b in bills if b["status"] == "open"
        ]
        if not payable:
            return Say(f"You have no open or overdue bills, so there is nothing to pay. {CLOSING}")
        method = self.method()
        if not isinstance(method, dict):
            return method
        todo = [("make_payment", _payment(b, method), b["bill_id"]) for b in payable]
        listed = ", ".join(
            f"bill {b['bill_id']} ({_month(b['period'])}){self.amount(b['amount'])}"
            for b in payable
        )
        step = self.writes(
            todo,
            f"I can pay {listed} in full with your {_kind(method)} ending in {method['last4']}. "
            + CONFIRM,
            f"Understood, I haven't made any payment. {CLOSING}",
        )
        if step is not None:
            return step
        total = sum(b["amount"] for b in payable)
        return Say(
            f"Thank you, the payment{self.amount(total)} went through and your bill is paid. "
            + CLOSING
        )


def _payment(bill: dict[str, Any], method: dict[str, Any]) -> dict[str, Any]:
    return {
        "bill_id": bill["bill_id"],
        "payment_method_id": method["method_id"],
        "amount": bill["amount"],
    }


def _kind(method: dict[str, Any]) -> str:
    return str(method["kind"]).replace("_", " ")


# --- the customer ----------------------------------------------------------------------------
def _section(system: str, title: str) -> str:
    found = re.search(rf"^# {re.escape(title)}\s*\n(.*?)(?=^# |\Z)", system, flags=re.M | re.S)
    return found[1].strip() if found else ""


_FIRST_PERSON = [
    (r"\bYou are\b", "I am"),
    (r"\byou are\b", "I am"),
    (r"\bYou were\b", "I was"),
    (r"\byou were\b", "I was"),
    (r"\bYour\b", "My"),
    (r"\byour\b", "my"),
    (r"\byours\b", "mine"),
    (r"\bYou\b", "I"),
    (r"\byou\b", "I"),
]


def _first_person(text: str) -> str:
    for pattern, repl in _FIRST_PERSON:
        text = re.sub(pattern, repl, text)
    return text


PHONE_ACTIONS = (
    (r"please turn airplane mode off|please turn off airplane mode", "toggle_airplane_mode"),
    (r"please take the sim card out|please reinsert", "reseat_sim_card"),
    (r"please turn mobile data on|please turn on mobile data", "toggle_mobile_data"),
    (r"please turn data roaming on|please turn on data roaming", "toggle_data_roaming"),
    (r"please restart your phone", "restart_phone"),
    (r"check your (phone's )?status bar", "check_status_bar"),
)


class Customer:
    """The customer: says what the task lets them know and does what the agent asks."""

    def __init__(self, system: str, messages: list[dict[str, Any]]):
        self.events = _events(messages)
        self.reason = _section(system, "Reason for your call")
        self.known = _section(system, "What you know")
        self.behave = _section(system, "How to behave")
        self.phone = (PHONE.search(self.known) or PHONE.search(system) or [None])[0]
        name = re.search(r"[Yy]our name is ([^.]+)\.", self.known)
        self.name = name[1].strip() if name else "Alex Doe"

    def reply(self) -> str | dict[str, Any]:
        last = self.events[-1] if self.events else None
        mine = sum(1 for e in self.events if e.kind == "out")
        if last is None or mine == 0:
            return "Hi. " + _first_person(self.reason)
        if last.kind == "result":
            if not last.ok or not isinstance(last.data, dict):
                return "My phone did something odd, I'm not sure it worked."
            return (
                "Done. My status bar shows: "
                + "; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in last.data.items())
                + "."
            )
        text = last.text
        low = text.lower()
        if mine >= 14:
            return "I have to go now, sorry. ###STOP###"
        if "being transferred" in low or "transferring you" in low:
            return "Thank you. ###TRANSFER###"
        if "outside what this support desk" in low:
            return "I see, thanks anyway. ###OUT-OF-SCOPE###"
        for pattern, tool in PHONE_ACTIONS:
            if re.search(pattern, low):
                return {"tool_calls": [{"name": tool, "arguments": {}}]}
        if "phone number" in low and "name" in low and "?" in text:
            return f"Sure. My name is {self.name} and my phone number is {self.phone}."
        if "which payment method" in low:
            card = re.search(r"ending in (\d{4})", self.known + " " + self.behave)
            return f"Please use the one ending in {card[1]}." if card else "The first one, please."
        if "how many gb" in low:
            want = re.search(
                r"want (?:to add )?(\d+) GB", self.known + " " + self.behave + " " + self.reason
            )
            return f"{want[1]} GB, please." if want else "Just 1 GB, please."
        if "which plan would you like" in low:
            plan = re.search(r"switch to (?:the )?(.+?) plan", self.known + " " + self.reason)
            return f"The {plan[1]} plan, please." if plan else "The cheapest one, please."
        if CONFIRM.lower() in low:
            return self.confirm(low)
        if "anything else" in low:
            return "No, that's all. Thank you! ###STOP###"
        if sum(1 for e in self.events if e.kind == "out" and e.text == "Okay.") >= 2:
            return "Thanks, bye. ###STOP###"
        return "Okay."

    def confirm(self, low: str) -> str:
        rules = (self.behave + " " + self.known).lower()
        if re.search(r"\bpay\b", low) and re.search(r"(do not|don't) want to pay", rules):
            return "No, I don't want to pay that today."
        offered = re.search(r"add (\d+) gb", low)
        floor = re.search(r"less than (\d+) gb, decline", rules)
        if offered and floor and int(offered[1]) < int(floor[1]):
            return "No thanks, that is not enough for me."
        return "Yes, please go ahead."
