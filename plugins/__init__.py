"""Plugin machinery: pluggy hook specifications, entry-point discovery, driver-set files, the
``winhv`` command line and the pytest plugin. Imported as ``winhv.plugins``.
"""
