"""Fleet mode: a nightly on many KVM hosts through Celery (Redis broker), one history in PostgreSQL.

* :mod:`.hostclass` -- host classes (what a nightly result depends on) and their queue names;
* :mod:`.runner`    -- the one adapter to the run machinery (``rig.run``);
* :mod:`.store`     -- nightlies, expected cases, exactly-once results, shard leases, events;
* :mod:`.app`, :mod:`.tasks` -- the Celery application and the shard task;
* :mod:`.submit`    -- creating a nightly and queueing its shards, waiting, the deadline;
* :mod:`.report`    -- the fleet's HTML page; :mod:`.services` -- throwaway Redis/PostgreSQL;
* :mod:`.cli`       -- ``rig fleet worker|submit|status|results|report``.
"""
