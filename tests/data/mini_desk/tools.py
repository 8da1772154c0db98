"""A tiny support desk for the engine's tests: accounts that may be suspended, and a phone."""

from typing import Literal

from pydantic import BaseModel, Field

from peerflow.envs import Toolset


class Account(BaseModel):
    id: str
    phone: str
    owed: float = Field(ge=0)
    status: Literal["active", "suspended"] = "active"


class DB(BaseModel):
    accounts: dict[str, Account]


class UserState(BaseModel):
    airplane_mode: bool = False
    phone: str = ""
    has_service: bool = True


assistant = Toolset()
user = Toolset()
setup = Toolset()
assertions = Toolset()


@assistant.tool
def find_account(env, phone: str) -> dict:
    """Find the account of a phone number.

    Args:
        phone: The phone number, like 555-0101.
    """
    for account in env.db.accounts.values():
        if account.phone == phone:
            return account.model_dump()
    raise ValueError(f"no account for phone {phone}")


@assistant.tool
def pay(env, account_id: str, amount: float) -> str:
    """Take a payment.

    Args:
        account_id: The account.
        amount: What to pay, in dollars.
    """
    account = env.db.accounts.get(account_id)
    if account is None:
        raise ValueError(f"no account {account_id}")
    if amount <= 0 or amount > account.owed:
        raise ValueError(f"amount must be between 0 and {account.owed}")
    account.owed = round(account.owed - amount, 2)
    return f"paid {amount}; owed now {account.owed}"


@assistant.tool
def resume(env, account_id: str) -> str:
    """Resume a suspended account once nothing is owed.

    Args:
        account_id: The account.
    """
    account = env.db.accounts[account_id]
    if account.owed > 0:
        raise ValueError("the account still owes money")
    account.status = "active"
    return "resumed"


@user.tool
def toggle_airplane_mode(env) -> str:
    """Switch airplane mode on or off on your phone."""
    env.user.airplane_mode = not env.user.airplane_mode
    return f"airplane mode is now {'on' if env.user.airplane_mode else 'off'}"


@user.tool
def check_phone(env) -> dict:
    """Look at your phone's status bar."""
    return {"airplane_mode": env.user.airplane_mode, "service": env.user.has_service}


@setup.tool
def own_phone(env, phone: str) -> None:
    env.user.phone = phone


@setup.tool
def suspend(env, account_id: str) -> None:
    env.db.accounts[account_id].status = "suspended"


@assertions.tool
def has_service(env) -> bool:
    return env.user.has_service


def sync(env) -> None:
    account = next((a for a in env.db.accounts.values() if a.phone == env.user.phone), None)
    active = account is not None and account.status == "active"
    env.user.has_service = active and not env.user.airplane_mode
