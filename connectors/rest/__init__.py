"""The REST connector: ``system:rest``, the ``rest`` source and the ``rest`` transform (Sesam).

Modules: :mod:`models` (config), :mod:`system` (session, auth, limits, retries), :mod:`auth`,
:mod:`retry`, :mod:`paging` (I/O-free paginators and the safety net), :mod:`operation` (templates,
parsing), :mod:`source`, :mod:`transform`. See the README, "REST".
"""
