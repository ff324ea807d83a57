"""Write a pandas data.frame as an openair-style ``.RData`` file (gzip, format version 2).

``rdata`` writes data.frames but not time-zone-aware datetimes; openair stores ``date`` as
POSIXct seconds with ``tzone = "GMT"``, which this constructor adds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from routeaq_assets.core.files import write_atomically

def _dataframe_constructor(data: pd.DataFrame, converter):  # noqa: ANN001, ANN202 - rdata's constructor protocol
    from rdata.conversion import to_r
    from rdata.parser import RObjectType

    values = []
    for _, series in data.items():
        if isinstance(series.dtype, pd.DatetimeTZDtype):
            seconds = series.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[s]").astype("int64")
            attributes = converter.convert_to_r_attributes(
                {"class": np.array(["POSIXct", "POSIXt"]), "tzone": np.array(["GMT"])}
            )
            values.append(
                to_r.build_r_object(
                    RObjectType.REAL, value=seconds.to_numpy(dtype=float), is_object=True, attributes=attributes
                )
            )
        elif isinstance(series.array, pd.Categorical):
            values.append(converter.convert_to_r_object(series.array))
        else:
            values.append(converter.convert_to_r_object(to_r.convert_pd_array_to_np_array(series.array)))
    row_names = np.ma.array(data=[to_r.R_INT_NA, -len(data)], mask=[True, False], fill_value=to_r.R_INT_NA)
    attributes = converter.convert_to_r_attributes(
        {"names": np.array(list(data.columns), dtype="U"), "class": "data.frame", "row.names": row_names}
    )
    return to_r.build_r_object(RObjectType.VEC, value=values, is_object=True, attributes=attributes)


def write_rdata(path: Path, name: str, frame: pd.DataFrame) -> None:
    """Write ``frame`` as the single object ``name`` of ``path``, atomically."""
    import rdata
    from rdata.conversion import to_r

    constructors = dict(to_r.DEFAULT_CLASS_MAP)
    constructors[pd.DataFrame] = _dataframe_constructor
    write_atomically(path, lambda partial: rdata.write_rda(partial, {name: frame}, compression="gzip", format_version=2, constructor_dict=constructors))
