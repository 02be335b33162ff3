"""The sandbox's state in SQLite (SQLAlchemy 2): accounts, event subscriptions, the CINNOX
service's records, what the sandbox received, and the webhooks it delivered.

Records (staff, contacts, enquiries, rooms, numbers, labels) are kept as their wire shape (a JSON
document) in one table keyed by kind and id, with one indexed ``lookup`` column for the search
each kind needs (a contact's full name, an enquiry's displayCaseNumber …): ``wire.py`` owns the
shapes, so the database does not repeat them.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    String,
    create_engine,
    delete,
    event,
    func,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool

from connectors.cinnox.sandbox.common import ControlError, iso, now_ms

MAX_ACCOUNTS = 10
ACCOUNT_LIMIT_MESSAGE = (
    "The limit of the Zapier Account created in CINNOX is 10. You have to delete the existing "
    "account before adding a new one when the number of the Zapier Account reaches the limit."
)
NAME_MAX = 50

Doc = dict[str, Any]


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Account(Base):
    """A "Zapier account" of the CINNOX Dashboard: a name, an App ID and its App Token."""

    __tablename__ = "accounts"
    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX), unique=True)
    token: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[int]
    updated_at: Mapped[int]


class RevokedToken(Base):
    """Tokens that were regenerated or whose account was deleted, by hash only, so a refusal
    can say why."""

    __tablename__ = "revoked_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    app_id: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(20))
    at: Mapped[int]


class Subscription(Base):
    """One account's webhook URL for one event family (``PATCH /{family}-event-sub``)."""

    __tablename__ = "subscriptions"
    app_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.app_id", ondelete="CASCADE"), primary_key=True
    )
    family: Mapped[str] = mapped_column(String(40), primary_key=True)
    url: Mapped[str]
    updated_at: Mapped[int]


class Record(Base):
    """A record of the CINNOX service, as its wire document."""

    __tablename__ = "records"
    kind: Mapped[str] = mapped_column(String(20), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    lookup: Mapped[str | None] = mapped_column(String(200))
    position: Mapped[int]
    data: Mapped[dict[str, Any]]
    __table_args__ = (Index("ix_records_lookup", "kind", "lookup"),)


class Received(Base):
    """What a client asked of the sandbox that a user wants to check: SMS, IMs, contacts."""

    __tablename__ = "received"
    __table_args__ = {"sqlite_autoincrement": True}  # ids are never reused, even after a reset
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(20), index=True)
    app_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[int]
    request: Mapped[dict[str, Any]]
    result: Mapped[dict[str, Any]]
    idempotency_key: Mapped[str | None] = mapped_column(String(200))


class Delivery(Base):
    """One event sent to one subscribed URL, with its attempts."""

    __tablename__ = "deliveries"
    # Ids are never reused: a retry still running after a reset must not update a new delivery.
    __table_args__ = {"sqlite_autoincrement": True}
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    app_id: Mapped[str] = mapped_column(String(64))
    family: Mapped[str] = mapped_column(String(40), index=True)
    url: Mapped[str]
    body: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(20))  # pending, delivered, failed, cancelled
    attempts: Mapped[int] = mapped_column(default=0)
    last_status: Mapped[int | None]
    last_error: Mapped[str | None]
    created_at: Mapped[int]
    updated_at: Mapped[int]


class Counter(Base):
    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[int]


def _pragmas(connection: Any, _record: Any) -> None:
    # WAL: readers do not wait for the writer; NORMAL: no fsync per commit (a sandbox can lose
    # its last second of state in a power cut, not its consistency).
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _account(row: Account) -> Doc:
    return {
        "appId": row.app_id,
        "name": row.name,
        "appToken": row.token,
        "createdAt": iso(row.created_at),
        "updatedAt": iso(row.updated_at),
    }


class Store:
    """All reads and writes of the sandbox's state. ``db`` is a file path, or None / ":memory:"
    for a database that lives as long as this object."""

    def __init__(self, db: str | Path | None = None) -> None:
        if db is None or str(db) == ":memory:":
            # One shared connection, else every new connection would see an empty database.
            self.engine = create_engine(
                "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        else:
            path = Path(db).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            # The server's event loop thread uses the engine that another thread created.
            self.engine = create_engine(
                f"sqlite:///{path}", connect_args={"check_same_thread": False}
            )
            event.listen(self.engine, "connect", _pragmas)
        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._batch: Session | None = None

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction; inside ``batch()``, the batch's one."""
        if self._batch is not None:
            yield self._batch
            return
        with self._sessions() as s, s.begin():
            yield s

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Make every write in the block one transaction (seeding: one commit, not hundreds)."""
        with self._sessions() as s, s.begin():
            self._batch = s
            try:
                yield
            finally:
                self._batch = None

    # ------------------------------------------------------------------ accounts

    def accounts(self) -> list[Doc]:
        with self.session() as s:
            rows = s.scalars(select(Account).order_by(Account.created_at, Account.app_id))
            return [_account(r) for r in rows]

    def _find(self, s: Session, ref: str) -> Account:
        row = s.get(Account, ref) or s.scalar(select(Account).where(Account.name == ref))
        if row is None:
            raise ControlError(f"no account with App ID or name {ref!r}", 404)
        return row

    def account(self, ref: str) -> Doc:
        """An account by App ID or name."""
        with self.session() as s:
            return _account(self._find(s, ref))

    def add_account(self, name: str) -> Doc:
        name = _account_name(name)
        with self.session() as s:
            if (s.scalar(select(func.count()).select_from(Account)) or 0) >= MAX_ACCOUNTS:
                raise ControlError(ACCOUNT_LIMIT_MESSAGE, 409)
            if s.scalar(select(Account).where(Account.name == name)) is not None:
                raise ControlError(f"an account named {name!r} already exists", 409)
            now = now_ms()
            row = Account(
                app_id=secrets.token_hex(16),
                name=name,
                token=secrets.token_urlsafe(48),
                created_at=now,
                updated_at=now,
            )
            s.add(row)
            return _account(row)

    def rename_account(self, ref: str, name: str) -> Doc:
        name = _account_name(name)
        with self.session() as s:
            row = self._find(s, ref)
            other = s.scalar(select(Account).where(Account.name == name))
            if other is not None and other.app_id != row.app_id:
                raise ControlError(f"an account named {name!r} already exists", 409)
            row.name, row.updated_at = name, now_ms()
            return _account(row)

    def regenerate_token(self, ref: str) -> Doc:
        with self.session() as s:
            row = self._find(s, ref)
            s.add(
                RevokedToken(
                    token_hash=_hash(row.token),
                    app_id=row.app_id,
                    reason="regenerated",
                    at=now_ms(),
                )
            )
            row.token, row.updated_at = secrets.token_urlsafe(48), now_ms()
            return _account(row)

    def delete_account(self, ref: str) -> Doc:
        """Delete an account: its token stops working and its subscriptions end."""
        with self.session() as s:
            row = self._find(s, ref)
            gone = _account(row)
            s.add(
                RevokedToken(
                    token_hash=_hash(row.token), app_id=row.app_id, reason="deleted", at=now_ms()
                )
            )
            s.execute(delete(Subscription).where(Subscription.app_id == row.app_id))
            s.delete(row)
            return gone

    def authenticate(self, app_id: str, token: str) -> Doc | str:
        """The account when ``token`` is ``app_id``'s current token, else why not."""
        with self.session() as s:
            row = s.scalar(select(Account).where(Account.token == token))
            if row is not None:
                if row.app_id != app_id:
                    return f"the App Token does not belong to App ID {app_id}"
                return _account(row)
            revoked = s.get(RevokedToken, _hash(token))
            if revoked is None:
                return "invalid App Token"
            if revoked.reason == "regenerated":
                return "the App Token was regenerated; use the new one"
            return "the App Token's account was deleted"

    # ------------------------------------------------------------------ subscriptions

    def subscribe(self, app_id: str, family: str, url: str) -> int:
        with self.session() as s:
            now = now_ms()
            row = s.get(Subscription, (app_id, family))
            if row is None:
                s.add(Subscription(app_id=app_id, family=family, url=url, updated_at=now))
            else:
                row.url, row.updated_at = url, now
            return now

    def unsubscribe(self, app_id: str, family: str) -> None:
        with self.session() as s:
            s.execute(
                delete(Subscription).where(
                    Subscription.app_id == app_id, Subscription.family == family
                )
            )

    def subscription_url(self, app_id: str, family: str) -> str | None:
        with self.session() as s:
            row = s.get(Subscription, (app_id, family))
            return None if row is None else row.url

    def subscriptions(self, family: str | None = None, app_id: str | None = None) -> list[Doc]:
        with self.session() as s:
            query = select(Subscription).order_by(Subscription.app_id, Subscription.family)
            if family is not None:
                query = query.where(Subscription.family == family)
            if app_id is not None:
                query = query.where(Subscription.app_id == app_id)
            return [
                {
                    "appId": r.app_id,
                    "family": r.family,
                    "url": r.url,
                    "updatedAt": iso(r.updated_at),
                }
                for r in s.scalars(query)
            ]

    # ------------------------------------------------------------------ records

    def put(self, kind: str, key: str, data: Doc, lookup: str | None = None) -> Doc:
        """Insert or replace a record; a new record goes last."""
        with self.session() as s:
            row = s.get(Record, (kind, key))
            if row is None:
                last = s.scalar(select(func.max(Record.position)).where(Record.kind == kind))
                s.add(
                    Record(kind=kind, key=key, lookup=lookup, data=data, position=(last or 0) + 1)
                )
            else:
                row.data, row.lookup = dict(data), lookup
            return dict(data)

    def get(self, kind: str, key: str) -> Doc | None:
        with self.session() as s:
            row = s.get(Record, (kind, key))
            return None if row is None else dict(row.data)

    def find(self, kind: str, lookup: str) -> Doc | None:
        """The first record of ``kind`` whose lookup value is exactly ``lookup``."""
        with self.session() as s:
            row = s.scalar(
                select(Record)
                .where(Record.kind == kind, Record.lookup == lookup)
                .order_by(Record.position)
                .limit(1)
            )
            return None if row is None else dict(row.data)

    def page(
        self, kind: str, *, lookup: str | None = None, offset: int = 0, limit: int | None = None
    ) -> tuple[int, list[Doc]]:
        """``(total matching, the page)``, oldest first."""
        with self.session() as s:
            where = [Record.kind == kind]
            if lookup is not None:
                where.append(Record.lookup == lookup)
            total = s.scalar(select(func.count()).select_from(Record).where(*where)) or 0
            query = select(Record).where(*where).order_by(Record.position).offset(offset)
            if limit is not None:
                query = query.limit(limit)
            return total, [dict(r.data) for r in s.scalars(query)]

    def all(self, kind: str) -> list[Doc]:
        return self.page(kind)[1]

    def remove(self, kind: str, key: str) -> bool:
        with self.session() as s:
            row = s.get(Record, (kind, key))
            if row is not None:
                s.delete(row)
            return row is not None

    def next_value(self, name: str, start: int) -> int:
        """The next number of a sequence (enquiry case numbers …), ``start`` first."""
        with self.session() as s:
            row = s.get(Counter, name)
            if row is None:
                row = Counter(name=name, value=start)
                s.add(row)
            else:
                row.value += 1
            return row.value

    # ------------------------------------------------------------------ received, deliveries

    def add_received(
        self,
        kind: str,
        app_id: str,
        request: Doc,
        result: Doc,
        idempotency_key: str | None = None,
    ) -> int:
        with self.session() as s:
            row = Received(
                kind=kind,
                app_id=app_id,
                at=now_ms(),
                request=request,
                result=result,
                idempotency_key=idempotency_key,
            )
            s.add(row)
            s.flush()
            return row.id

    def update_received(self, id_: int, **result: Any) -> None:
        with self.session() as s:
            row = s.get(Received, id_)
            if row is not None:
                row.result = {**row.result, **result}

    def received(self, kind: str | None = None, limit: int = 100) -> list[Doc]:
        """Newest first."""
        with self.session() as s:
            query = select(Received).order_by(Received.id.desc()).limit(limit)
            if kind is not None:
                query = query.where(Received.kind == kind)
            return [
                {
                    "id": r.id,
                    "kind": r.kind,
                    "appId": r.app_id,
                    "at": iso(r.at),
                    "request": r.request,
                    "result": r.result,
                    "idempotencyKey": r.idempotency_key,
                }
                for r in s.scalars(query)
            ]

    def add_delivery(self, app_id: str, family: str, url: str, body: Doc) -> int:
        with self.session() as s:
            now = now_ms()
            row = Delivery(
                app_id=app_id,
                family=family,
                url=url,
                body=body,
                state="pending",
                attempts=0,
                created_at=now,
                updated_at=now,
            )
            s.add(row)
            s.flush()
            return row.id

    def update_delivery(self, id_: int, **fields: Any) -> None:
        with self.session() as s:
            row = s.get(Delivery, id_)
            if row is None:
                return
            for name, value in fields.items():
                setattr(row, name, value)
            row.updated_at = now_ms()

    def deliveries(self, family: str | None = None, limit: int = 100) -> list[Doc]:
        """Newest first."""
        with self.session() as s:
            query = select(Delivery).order_by(Delivery.id.desc()).limit(limit)
            if family is not None:
                query = query.where(Delivery.family == family)
            return [
                {
                    "id": r.id,
                    "appId": r.app_id,
                    "family": r.family,
                    "url": r.url,
                    "body": r.body,
                    "state": r.state,
                    "attempts": r.attempts,
                    "lastStatus": r.last_status,
                    "lastError": r.last_error,
                    "createdAt": iso(r.created_at),
                    "updatedAt": iso(r.updated_at),
                }
                for r in s.scalars(query)
            ]

    # ------------------------------------------------------------------ reset

    def clear(self, *, accounts: bool = False) -> None:
        """Forget records, what was received and deliveries; with ``accounts``, also accounts,
        their subscriptions and revoked tokens."""
        tables: list[type[Base]] = [Record, Received, Delivery, Counter]
        if accounts:
            tables += [Subscription, RevokedToken, Account]
        with self.session() as s:
            for table in tables:
                s.execute(delete(table))

    def is_empty(self) -> bool:
        with self.session() as s:
            return not s.scalar(select(func.count()).select_from(Record))


def _account_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ControlError("an account needs a name")
    if len(name) > NAME_MAX:
        raise ControlError(f"an account name has at most {NAME_MAX} characters")
    return name
