"""Run inside every Python kernel at start (``IPKernelApp.exec_files``): the display formatters
E2B's code-interpreter template adds, so results carry what the SDK reads.

- ``e2b/chart``: a matplotlib figure's data extracted by E2B's own ``e2b_charts`` (the SDK's
  ``Result.chart``: line, scatter, bar, pie, box-and-whisker, superchart);
- ``e2b/data``: a DataFrame as ``to_dict(orient="list")``, timestamps in ISO form (``Result.data``);
- ``application/json``: lists and dicts as JSON (``Result.json``), numpy values made plain.

It runs in the user's namespace (as IPython startup files do), so everything is defined in a
function and the function deleted. pandas, matplotlib and ``e2b_charts`` are imported only when
an object of theirs is displayed, so a kernel does not pay for them at start.
"""


def _sandlot_install_e2b_formatters() -> None:
    import json

    from IPython import get_ipython
    from IPython.core.formatters import BaseFormatter, JSONFormatter
    from traitlets import ObjectName, Unicode

    def of_class(obj: object, package: str, name: str) -> bool:
        """By name, so nothing is imported (pandas 3 says ``pandas``, not ``pandas.core.frame``)."""
        return any(c.__name__ == name and c.__module__.partition(".")[0] == package for c in type(obj).__mro__)

    def chart(figure: object) -> dict | None:
        try:
            from e2b_charts import chart_figure_to_dict

            return chart_figure_to_dict(figure) or None
        except Exception:  # as E2B's: a figure we can't read is still shown as an image
            return None

    def frame_data(frame: object) -> dict:
        import pandas

        data = frame.to_dict(orient="list")  # type: ignore[attr-defined]
        return {k: [v.isoformat() if isinstance(v, pandas.Timestamp) else v for v in column]
                for k, column in data.items()}

    def plain(value: object) -> object:
        if hasattr(value, "tolist"):  # numpy arrays and scalars
            return value.tolist()
        if hasattr(value, "isoformat"):
            return value.isoformat()
        raise TypeError(f"{type(value).__name__} is not JSON")

    class E2BChartFormatter(BaseFormatter):
        format_type = Unicode("e2b/chart")
        print_method = ObjectName("_repr_e2b_chart_")
        _return_type = (dict, str)

        def __call__(self, obj: object) -> object:
            if of_class(obj, "matplotlib", "Figure"):
                return chart(obj)
            return super().__call__(obj)

    class E2BDataFormatter(BaseFormatter):
        format_type = Unicode("e2b/data")
        print_method = ObjectName("_repr_e2b_data_")
        _return_type = (dict, str)

        def __call__(self, obj: object) -> object:
            if of_class(obj, "pandas", "DataFrame"):
                try:
                    return frame_data(obj)
                except Exception:
                    return None
            return super().__call__(obj)

    class E2BJSONFormatter(JSONFormatter):
        def __call__(self, obj: object) -> object:
            if isinstance(obj, (list, dict)):
                try:
                    return json.loads(json.dumps(obj, default=plain, allow_nan=False)), {"expanded": True}
                except (TypeError, ValueError):
                    pass
            return super().__call__(obj)

    shell = get_ipython()
    if shell is None:
        return
    formatters = shell.display_formatter.formatters
    formatters["e2b/chart"] = E2BChartFormatter(parent=shell.display_formatter)
    formatters["e2b/data"] = E2BDataFormatter(parent=shell.display_formatter)
    formatters["application/json"] = E2BJSONFormatter(parent=shell.display_formatter)


_sandlot_install_e2b_formatters()
del _sandlot_install_e2b_formatters
