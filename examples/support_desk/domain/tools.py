"""Bluewave Mobile's support desk: a mobile carrier's accounts and a customer's phone.

Two sides act on this world (dual control). The assistant works on the carrier's database
(`DB`: customers, lines, plans, bills) through its tools; the customer works on their own
phone (`UserState`) through theirs. Neither can fix everything alone: a suspended line
needs the agent, airplane mode needs the customer, roaming abroad needs both (the line's
roaming on the carrier's side, the data-roaming switch on the phone).

`sync` runs after every call and recomputes what the phone shows (signal, working data)
from BOTH sides, so "resume the line" shows up on the status bar at once.

Every write checks its preconditions and raises with a message the agent can act on;
money is in dollars (two decimals), data in GB.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from peerflow.envs import Toolset

# Policy numbers the tools enforce; policy.md states the same ones.
TOPUP_CAP_GB = 5  # per line and calendar month
TOPUP_PRICE_PER_GB = 2.00
ROAMING_DAILY_FEE = 8.00
TRANSFER_TEXT = "Transfer successful. A human agent will take over this conversation."

PhoneNumber = Annotated[str, Field(pattern=r"^555-\d{4}$")]
CustomerId = Annotated[str, Field(pattern=r"^C-\d{4}$")]
LineId = Annotated[str, Field(pattern=r"^L-\d{4}$")]
BillId = Annotated[str, Field(pattern=r"^B-\d{4}$")]
PlanId = Annotated[str, Field(pattern=r"^P-[A-Z0-9]+$")]
MethodId = Annotated[str, Field(pattern=r"^PM-\d{4}$")]
Money = Annotated[float, Field(ge=0)]
Gigabytes = Annotated[float, Field(ge=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Plan(_Model):
    plan_id: PlanId
    name: str = Field(min_length=1)
    monthly_price: Money
    data_gb: Annotated[int, Field(gt=0)]
    description: str


class PaymentMethod(_Model):
    method_id: MethodId
    kind: Literal["credit_card", "debit_card", "bank_account"]
    last4: Annotated[str, Field(pattern=r"^\d{4}$")]


class Customer(_Model):
    customer_id: CustomerId
    name: str = Field(min_length=1)
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    line_ids: list[LineId] = Field(min_length=1)
    payment_methods: list[PaymentMethod] = Field(min_length=1)


class Line(_Model):
    line_id: LineId
    phone_number: PhoneNumber
    customer_id: CustomerId
    plan_id: PlanId
    status: Literal["active", "suspended"] = "active"
    suspension_reason: Literal["overdue_bill", "lost_or_stolen"] | None = None
    roaming_enabled: bool = False
    data_used_gb: Gigabytes = 0.0
    topup_gb_this_month: Annotated[int, Field(ge=0, le=TOPUP_CAP_GB)] = 0

    @model_validator(mode="after")
    def _reason_iff_suspended(self) -> Line:
        if (self.status == "suspended") != (self.suspension_reason is not None):
            raise ValueError("a suspended line needs a suspension_reason, an active one none")
        return self


class Bill(_Model):
    bill_id: BillId
    customer_id: CustomerId
    period: Annotated[str, Field(pattern=r"^\d{4}-\d{2}$")]
    amount: Money
    due_date: Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$")]
    status: Literal["open", "paid", "overdue"]
    paid_with: MethodId | None = None


class DB(_Model):
    """The carrier's database; references between records are checked on load."""

    company: str
    today: Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$")]
    plans: dict[str, Plan]
    customers: dict[str, Customer]
    lines: dict[str, Line]
    bills: dict[str, Bill]

    @model_validator(mode="after")
    def _consistent(self) -> DB:
        for kind, table, key in (
            ("plan", self.plans, "plan_id"),
            ("customer", self.customers, "customer_id"),
            ("line", self.lines, "line_id"),
            ("bill", self.bills, "bill_id"),
        ):
            for k, v in table.items():
                if getattr(v, key) != k:
                    raise ValueError(f"{kind} {k!r} is stored under the wrong key")
        numbers = [line.phone_number for line in self.lines.values()]
        if len(set(numbers)) != len(numbers):
            raise ValueError("two lines share a phone number")
        for line in self.lines.values():
            if line.plan_id not in self.plans:
                raise ValueError(f"line {line.line_id}: unknown plan {line.plan_id}")
            owner = self.customers.get(line.customer_id)
            if owner is None or line.line_id not in owner.line_ids:
                raise ValueError(f"line {line.line_id}: not listed by customer {line.customer_id}")
        for c in self.customers.values():
            for line_id in c.line_ids:
                if line_id not in self.lines:
                    raise ValueError(f"customer {c.customer_id}: unknown line {line_id}")
        for bill in self.bills.values():
            if bill.customer_id not in self.customers:
                raise ValueError(f"bill {bill.bill_id}: unknown customer {bill.customer_id}")
        return self


class UserState(_Model):
    """The customer's phone. The last two fields are derived: `sync` recomputes them."""

    phone_number: PhoneNumber | None = None  # the line whose SIM card is in the phone
    airplane_mode: bool = False
    mobile_data: bool = True
    data_roaming: bool = False  # the phone's own "data roaming" switch
    sim_status: Literal["ok", "not_detected"] = "ok"
    abroad_in: str | None = None  # the country the customer is in, None at home
    signal: Literal["no_sim", "airplane", "no_service", "home", "roaming"] = "no_sim"
    data_working: bool = False


assistant = Toolset()
user = Toolset()
setup = Toolset()
assertions = Toolset()


# --- helpers ----------------------------------------------------------------------------
def _normal_number(text: str) -> str:
    digits = re.sub(r"\D", "", text)
    return f"{digits[-7:-4]}-{digits[-4:]}" if len(digits) >= 7 else text.strip()


def _line_by_number(db: DB, number: str | None) -> Line | None:
    if number is None:
        return None
    return next((line for line in db.lines.values() if line.phone_number == number), None)


def _customer(db: DB, customer_id: str) -> Customer:
    found = db.customers.get(customer_id)
    if found is None:
        raise ValueError(f"customer {customer_id} not found")
    return found


def _line(db: DB, line_id: str) -> Line:
    found = db.lines.get(line_id)
    if found is None:
        raise ValueError(f"line {line_id} not found")
    return found


def _bill(db: DB, bill_id: str) -> Bill:
    found = db.bills.get(bill_id)
    if found is None:
        raise ValueError(f"bill {bill_id} not found")
    return found


def _allowance(db: DB, line: Line) -> int:
    return db.plans[line.plan_id].data_gb + line.topup_gb_this_month


def _overdue(db: DB, customer_id: str) -> list[Bill]:
    return [b for b in db.bills.values() if b.customer_id == customer_id and b.status == "overdue"]


def _money(x: float) -> float:
    return round(x + 1e-9, 2)


def sync(env: Any) -> None:
    """Recompute what the phone shows from the phone's switches and the line's record."""
    phone: UserState = env.user
    line = _line_by_number(env.db, phone.phone_number)
    if line is None or phone.sim_status != "ok":
        signal = "no_sim"
    elif phone.airplane_mode:
        signal = "airplane"
    elif line.status != "active":
        signal = "no_service"
    elif phone.abroad_in is not None:
        signal = "roaming" if line.roaming_enabled else "no_service"
    else:
        signal = "home"
    phone.signal = signal
    phone.data_working = bool(
        line is not None
        and signal in ("home", "roaming")
        and phone.mobile_data
        and (phone.abroad_in is None or phone.data_roaming)
        and line.data_used_gb < _allowance(env.db, line)
    )


# --- assistant tools: reads ----------------------------------------------------------------
@assistant.tool
def find_customer_by_phone(env: Any, phone_number: str) -> dict[str, Any]:
    """Find the customer who owns a phone number, to identify the caller.

    Args:
        phone_number: The line's phone number, e.g. 555-0142.
    """
    line = _line_by_number(env.db, _normal_number(phone_number))
    if line is None:
        raise ValueError(f"no customer has the phone number {phone_number}")
    customer = env.db.customers[line.customer_id]
    return {"customer_id": customer.customer_id, "name": customer.name, "line_id": line.line_id}


@assistant.tool
def get_customer(env: Any, customer_id: CustomerId) -> dict[str, Any]:
    """A customer's details: name, email, lines and payment methods on file.

    Args:
        customer_id: The customer's id, e.g. C-1001.
    """
    return _customer(env.db, customer_id).model_dump(mode="json")


@assistant.tool
def get_line(env: Any, line_id: LineId) -> dict[str, Any]:
    """A phone line's status, plan, roaming setting and this month's data usage.

    Args:
        line_id: The line's id, e.g. L-2001.
    """
    line = _line(env.db, line_id)
    plan = env.db.plans[line.plan_id]
    out = line.model_dump(mode="json")
    out.update(
        plan_name=plan.name,
        data_allowance_gb=_allowance(env.db, line),
        data_remaining_gb=round(max(0.0, _allowance(env.db, line) - line.data_used_gb), 2),
        topup_gb_left_this_month=TOPUP_CAP_GB - line.topup_gb_this_month,
    )
    return out


@assistant.tool
def list_plans(env: Any) -> list[dict[str, Any]]:
    """All mobile plans on offer, with monthly price and monthly data allowance."""
    return [p.model_dump(mode="json") for p in env.db.plans.values()]


@assistant.tool
def get_bills(env: Any, customer_id: CustomerId) -> list[dict[str, Any]]:
    """A customer's bills, oldest first, with amount, due date and status (open/paid/overdue).

    Args:
        customer_id: The customer's id, e.g. C-1001.
    """
    _customer(env.db, customer_id)
    bills = [b for b in env.db.bills.values() if b.customer_id == customer_id]
    return [b.model_dump(mode="json") for b in sorted(bills, key=lambda b: b.period)]


# --- assistant tools: writes ---------------------------------------------------------------
@assistant.tool
def make_payment(
    env: Any, bill_id: BillId, payment_method_id: MethodId, amount: Annotated[float, Field(gt=0)]
) -> dict[str, Any]:
    """Pay a bill in full with one of the customer's payment methods on file.

    Args:
        bill_id: The bill to pay, e.g. B-3001.
        payment_method_id: The payment method on file to charge, e.g. PM-4001.
        amount: The amount in dollars; must equal the bill's full amount.
    """
    bill = _bill(env.db, bill_id)
    if bill.status == "paid":
        raise ValueError(f"bill {bill_id} is already paid")
    customer = env.db.customers[bill.customer_id]
    if payment_method_id not in {m.method_id for m in customer.payment_methods}:
        raise ValueError(
            f"payment method {payment_method_id} is not on file for customer {customer.customer_id}"
        )
    if _money(amount) != _money(bill.amount):
        raise ValueError(
            f"bill {bill_id} must be paid in full: {bill.amount:.2f}, not {amount:.2f}"
        )
    bill.status = "paid"
    bill.paid_with = payment_method_id
    return {"bill_id": bill_id, "status": "paid", "amount_charged": _money(bill.amount)}


@assistant.tool
def resume_line(env: Any, line_id: LineId) -> dict[str, Any]:
    """Resume a line suspended for an overdue bill, once every overdue bill is paid.

    Args:
        line_id: The suspended line, e.g. L-2001.
    """
    line = _line(env.db, line_id)
    if line.status == "active":
        raise ValueError(f"line {line_id} is not suspended")
    if line.suspension_reason != "overdue_bill":
        raise ValueError(
            f"line {line_id} is suspended as {line.suspension_reason}; only a human agent can "
            "resume it"
        )
    unpaid = _overdue(env.db, line.customer_id)
    if unpaid:
        ids = ", ".join(b.bill_id for b in unpaid)
        raise ValueError(f"line {line_id} cannot be resumed: overdue bill(s) {ids} unpaid")
    line.status = "active"
    line.suspension_reason = None
    return {"line_id": line_id, "status": "active"}


@assistant.tool
def enable_roaming(env: Any, line_id: LineId) -> dict[str, Any]:
    """Turn international roaming on for a line (charged per day used abroad).

    Args:
        line_id: The line, e.g. L-2001.
    """
    line = _line(env.db, line_id)
    if line.status != "active":
        raise ValueError(f"line {line_id} is suspended; roaming cannot be changed")
    if line.roaming_enabled:
        raise ValueError(f"roaming is already enabled on line {line_id}")
    line.roaming_enabled = True
    return {"line_id": line_id, "roaming_enabled": True, "daily_fee": ROAMING_DAILY_FEE}


@assistant.tool
def disable_roaming(env: Any, line_id: LineId) -> dict[str, Any]:
    """Turn international roaming off for a line.

    Args:
        line_id: The line, e.g. L-2001.
    """
    line = _line(env.db, line_id)
    if not line.roaming_enabled:
        raise ValueError(f"roaming is already disabled on line {line_id}")
    line.roaming_enabled = False
    return {"line_id": line_id, "roaming_enabled": False}


@assistant.tool
def add_data_topup(
    env: Any, line_id: LineId, gigabytes: Annotated[int, Field(ge=1, le=TOPUP_CAP_GB)]
) -> dict[str, Any]:
    """Add extra data to a line for the rest of this month, charged to the next bill.

    Args:
        line_id: The line, e.g. L-2001.
        gigabytes: Whole GB to add (1 to 5); a line gets at most 5 GB of top-ups a month.
    """
    line = _line(env.db, line_id)
    if line.status != "active":
        raise ValueError(f"line {line_id} is suspended; resume it before a top-up")
    left = TOPUP_CAP_GB - line.topup_gb_this_month
    if gigabytes > left:
        raise ValueError(
            f"line {line_id} can get only {left} more GB of top-ups this month "
            f"(cap {TOPUP_CAP_GB} GB)"
        )
    line.topup_gb_this_month += gigabytes
    return {
        "line_id": line_id,
        "added_gb": gigabytes,
        "charge": _money(gigabytes * TOPUP_PRICE_PER_GB),
        "data_allowance_gb": _allowance(env.db, line),
    }


@assistant.tool
def change_plan(env: Any, line_id: LineId, plan_id: PlanId) -> dict[str, Any]:
    """Move a line to another plan from today; not allowed while the customer has an overdue bill.

    Args:
        line_id: The line, e.g. L-2001.
        plan_id: The new plan's id, e.g. P-PLUS30.
    """
    line = _line(env.db, line_id)
    plan = env.db.plans.get(plan_id)
    if plan is None:
        raise ValueError(f"plan {plan_id} not found")
    if line.plan_id == plan_id:
        raise ValueError(f"line {line_id} is already on plan {plan_id}")
    unpaid = _overdue(env.db, line.customer_id)
    if unpaid:
        ids = ", ".join(b.bill_id for b in unpaid)
        raise ValueError(f"plan changes are not allowed while bill(s) {ids} are overdue")
    if line.status != "active":
        raise ValueError(f"line {line_id} is suspended")
    line.plan_id = plan_id
    return {"line_id": line_id, "plan_id": plan_id, "monthly_price": plan.monthly_price}


@assistant.tool
def transfer_to_human_agents(env: Any, summary: str) -> str:
    """Hand the conversation to a human agent, for requests this desk may not handle.

    Args:
        summary: A short summary of the customer's request for the human agent.
    """
    return TRANSFER_TEXT


# --- user tools: the customer's phone ----------------------------------------------------
_SIGNAL_TEXT = {
    "no_sim": "No SIM",
    "airplane": "Airplane mode",
    "no_service": "No service",
    "home": "Full bars (Bluewave)",
    "roaming": "Roaming (partner network)",
}


def _status(env: Any) -> dict[str, str]:
    sync(env)  # what the phone shows now, whoever changed what since the last call
    phone: UserState = env.user
    return {
        "signal": _SIGNAL_TEXT[phone.signal],
        "airplane_mode": "on" if phone.airplane_mode else "off",
        "mobile_data": "on" if phone.mobile_data else "off",
        "data_roaming": "on" if phone.data_roaming else "off",
        "data_connection": "4G" if phone.data_working else "none",
    }


@user.tool
def check_status_bar(env: Any) -> dict[str, str]:
    """Look at the phone's status bar and quick settings: signal, switches, data connection."""
    return _status(env)


@user.tool
def toggle_airplane_mode(env: Any) -> dict[str, str]:
    """Switch airplane mode on if it is off, off if it is on; returns the new status bar."""
    env.user.airplane_mode = not env.user.airplane_mode
    return _status(env)


@user.tool
def toggle_mobile_data(env: Any) -> dict[str, str]:
    """Switch mobile data on if it is off, off if it is on; returns the new status bar."""
    env.user.mobile_data = not env.user.mobile_data
    return _status(env)


@user.tool
def toggle_data_roaming(env: Any) -> dict[str, str]:
    """Switch the phone's data-roaming setting on or off; returns the new status bar."""
    env.user.data_roaming = not env.user.data_roaming
    return _status(env)


@user.tool
def reseat_sim_card(env: Any) -> dict[str, str]:
    """Take the SIM card out and put it back in firmly; returns the new status bar."""
    env.user.sim_status = "ok"
    return _status(env)


@user.tool
def restart_phone(env: Any) -> dict[str, str]:
    """Turn the phone off and on again; returns the status bar after it starts."""
    return _status(env)


# --- setup: what a task's initial actions may do besides the tools ------------------------
@setup.tool
def set_phone_owner(env: Any, phone_number: str) -> None:
    """Put the SIM of this line into the customer's phone."""
    if _line_by_number(env.db, phone_number) is None:
        raise ValueError(f"no line has the number {phone_number}")
    env.user.phone_number = phone_number


@setup.tool
def set_airplane_mode(env: Any, on: bool) -> None:
    env.user.airplane_mode = on


@setup.tool
def set_mobile_data(env: Any, on: bool) -> None:
    env.user.mobile_data = on


@setup.tool
def set_data_roaming(env: Any, on: bool) -> None:
    env.user.data_roaming = on


@setup.tool
def dislodge_sim(env: Any) -> None:
    env.user.sim_status = "not_detected"


@setup.tool
def travel_abroad(env: Any, country: str) -> None:
    env.user.abroad_in = country


@setup.tool
def set_data_used(env: Any, line_id: str, gigabytes: float) -> None:
    _line(env.db, line_id).data_used_gb = gigabytes


@setup.tool
def set_topups_this_month(env: Any, line_id: str, gigabytes: int) -> None:
    if not 0 <= gigabytes <= TOPUP_CAP_GB:
        raise ValueError(f"top-ups are 0..{TOPUP_CAP_GB} GB a month")
    _line(env.db, line_id).topup_gb_this_month = gigabytes


@setup.tool
def set_line_roaming(env: Any, line_id: str, enabled: bool) -> None:
    _line(env.db, line_id).roaming_enabled = enabled


@setup.tool
def mark_bill_overdue(env: Any, bill_id: str) -> None:
    bill = _bill(env.db, bill_id)
    bill.status, bill.paid_with = "overdue", None


@setup.tool
def suspend_line_for_nonpayment(env: Any, line_id: str) -> None:
    """Suspend a line whose customer has an overdue bill (mark one first)."""
    line = _line(env.db, line_id)
    if not _overdue(env.db, line.customer_id):
        raise ValueError(f"customer {line.customer_id} has no overdue bill")
    line.status, line.suspension_reason = "suspended", "overdue_bill"


@setup.tool
def suspend_line_lost_or_stolen(env: Any, line_id: str) -> None:
    line = _line(env.db, line_id)
    line.status, line.suspension_reason = "suspended", "lost_or_stolen"


# --- assertions: what a task's environment assertions may check ---------------------------
@assertions.tool
def phone_has_service(env: Any) -> bool:
    return env.user.signal in ("home", "roaming")


@assertions.tool
def phone_data_works(env: Any) -> bool:
    return env.user.data_working


@assertions.tool
def line_status(env: Any, line_id: str) -> str:
    return _line(env.db, line_id).status


@assertions.tool
def line_roaming_enabled(env: Any, line_id: str) -> bool:
    return _line(env.db, line_id).roaming_enabled


@assertions.tool
def line_plan(env: Any, line_id: str) -> str:
    return _line(env.db, line_id).plan_id


@assertions.tool
def bill_status(env: Any, bill_id: str) -> str:
    return _bill(env.db, bill_id).status
