"""A tiny name -> factory registry (timm style): ``@REG.register("name")``, ``REG.create``."""

from __future__ import annotations

import difflib
import typing
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from nnmark.errors import NnmarkError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories. Registering a name twice raises; an unknown name is a user error."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.names(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise NnmarkError(
                f"unknown {self.kind} {name!r}{hint}; known: {', '.join(self.names())}"
            ) from None

    def create(self, name: str, *args: object, **cfg: object) -> object:
        factory = self.get(name)
        if not callable(factory):
            raise TypeError(f"{self.kind} {name!r} is not callable")
        return factory(*args, **cfg)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items


P = TypeVar("P", bound=BaseModel)


def validate_params(params_cls: type[P], params: dict[str, Any], what: str) -> P:
    """Build a frozen parameter model; unknown names or bad values become one NnmarkError line."""
    try:
        return params_cls(**params)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        known = ", ".join(params_cls.model_fields)
        raise NnmarkError(f"bad parameter for {what}: {problems} (known: {known})") from None


def declared_params(cls: type, *, inherited: bool = True) -> type[BaseModel] | None:
    """The parameter model ``cls`` (or, if ``inherited``, its nearest ancestor) names as its
    generic argument: ``AdiParams`` for ``class Adi(Scheme[AdiParams])``; None where none is named."""
    for klass in cls.__mro__ if inherited else (cls,):
        for base in klass.__dict__.get("__orig_bases__", ()):
            for arg in typing.get_args(base):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    return arg
    return None


class TypedParams:
    """Mixin of classes generic over their parameter model (``Scheme[AdiParams]``): the generic
    argument gives ``self.params`` its static type and is the ``Params`` model ``__init__``
    validates. A class declared over a model gets it as ``Params`` unless it sets ``Params``
    itself; ``Params`` must be the declared model or a subclass (else ``TypeError`` when the class
    is defined). So each class states its parameters once, and ``self.params.field`` type-checks
    without ``isinstance`` asserts."""

    Params: ClassVar[type[BaseModel]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = declared_params(cls)
        if declared is None:
            return
        if "Params" not in cls.__dict__ and declared_params(cls, inherited=False) is declared:
            cls.Params = declared
        if not (isinstance(cls.Params, type) and issubclass(cls.Params, declared)):
            raise TypeError(
                f"{cls.__qualname__}.Params is {cls.Params!r}, but the class is declared over "
                f"{declared.__name__}"
            )


class Configurable(TypedParams):
    """Base of registered components configured by a frozen pydantic ``Params`` model."""

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]]

    @classmethod
    def describe(cls) -> str:
        """The first docstring line: the summary ``nnmark list`` prints."""
        doc = (cls.__doc__ or "").strip().splitlines()
        return doc[0] if doc else cls.name

    @classmethod
    def parameter_table(cls) -> list[tuple[str, str, str]]:
        """(name, default, description) rows for ``nnmark list ... --verbose``."""
        return [(n, repr(f.default), f.description or "") for n, f in cls.Params.model_fields.items()]
