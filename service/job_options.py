"""The options a job may set through the service, as a pydantic model derived from the one
declaration (client/options.py: fields marked `job=True`, with their defaults and bounds). Values
come as strings from forms and CSV manifests or as JSON; quads may be "0 10 0 0" or "0,10,0,0"."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from lipsync_triton.client.options import Quad, bound_error, job_options
from lipsync_triton.errors import OptionError


_SPECS = {d.name: d.spec for d in job_options()}


class _JobOptionsBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _quad_from_text(cls, value, info):
        if isinstance(value, str) and cls.model_fields[info.field_name].annotation in (Quad, Quad | None):
            parts = value.replace(",", " ").split()
            return tuple(parts) if parts else None
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _quad_bounds(cls, value, info):
        """A quad's bounds apply to each of its values (pydantic's apply to scalars only)."""
        spec = _SPECS[info.field_name]
        error = bound_error(spec, value) if isinstance(value, tuple) else None
        if error:
            raise ValueError(error)
        return value

    def generate_kwargs(self) -> dict:
        """Keyword arguments of GenerateOptions (the names are the same)."""
        return self.model_dump()

    @classmethod
    def parse(cls, fields: dict) -> "_JobOptionsBase":
        """Options from untrusted fields; a clear one-line error naming the field (unknown names too)."""
        try:
            return cls(**{k: v for k, v in fields.items() if v not in (None, "")})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "options"
            raise OptionError(where, first.get("msg", "invalid").removeprefix("Value error, ")) from None


JobOptions = create_model(
    "JobOptions", __base__=_JobOptionsBase, __doc__="The generate options a job may set (client/options.py declares them).",
    **{d.name: (d.type, Field(d.default, **({} if d.type in (Quad, Quad | None) else
                                            {"ge": d.spec.ge, "gt": d.spec.gt, "le": d.spec.le}),
                              max_length=d.spec.max_length, description=d.spec.help))
       for d in job_options()},
)
OPTION_NAMES = tuple(JobOptions.model_fields)
