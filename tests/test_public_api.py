"""The public surface is explicit: exactly these names, mirroring Ray's."""
import miniray

EXPECTED = {
    "ActorID", "FunctionID", "JobID", "NodeID", "PlacementGroupID", "TaskID", "WorkerID",
    "DynamicObjectRefGenerator", "ObjectID", "ObjectRef", "ObjectRefGenerator", "__version__",
    "available_resources", "cancel",
    "cluster_resources", "exceptions", "get", "get_actor", "get_gpu_ids",
    "get_runtime_context", "init", "is_initialized", "kill", "method", "nodes", "put",
    "remote", "shutdown", "timeline", "wait",
}


def test_all_is_pinned():
    assert set(miniray.__all__) == EXPECTED
    assert len(miniray.__all__) == len(set(miniray.__all__))


def test_every_name_exists():
    for name in miniray.__all__:
        assert hasattr(miniray, name), name


def test_exceptions_module_matches_ray_names():
    from miniray import exceptions
    for name in ("RayError", "RayTaskError", "GetTimeoutError", "WorkerCrashedError",
                 "TaskCancelledError", "ObjectLostError", "OwnerDiedError",
                 "RaySystemError", "ObjectStoreFullError", "RayActorError",
                 "ActorDiedError", "OutOfMemoryError"):
        assert issubclass(getattr(exceptions, name), Exception), name
    assert issubclass(exceptions.GetTimeoutError, TimeoutError)
    assert issubclass(exceptions.OutOfMemoryError, exceptions.RayError)


def test_runtime_env_module_matches_ray_names():
    from miniray import runtime_env
    assert set(runtime_env.__all__) == {"RuntimeEnv", "RuntimeEnvConfig"}
    assert issubclass(runtime_env.RuntimeEnv, dict)
    from miniray.exceptions import RuntimeEnvSetupError
    assert issubclass(RuntimeEnvSetupError, miniray.exceptions.RayError)


def test_job_submission_module_is_pinned():
    """``miniray.job_submission`` has Ray's ``ray.job_submission`` names."""
    import miniray.job_submission as job_submission
    assert set(job_submission.__all__) == {
        "JobSubmissionClient", "JobStatus", "JobErrorType", "JobInfo", "JobDetails",
        "DriverInfo", "JobType"}
    for name in job_submission.__all__:
        assert hasattr(job_submission, name), name
    status = job_submission.JobStatus
    assert [s.value for s in status] == ["PENDING", "RUNNING", "STOPPED", "SUCCEEDED",
                                         "FAILED"]
    assert [s for s in status if s.is_terminal()] == [status.STOPPED, status.SUCCEEDED,
                                                      status.FAILED]


def test_object_id_is_rays_old_name_for_object_ref():
    assert miniray.ObjectID is miniray.ObjectRef


def test_dag_module_is_pinned():
    """``miniray.dag`` has Ray's ``ray.dag`` names for the DAG API, and is
    reachable as an attribute without being one of ``miniray.__all__``."""
    from miniray import dag
    assert miniray.dag is dag
    assert set(dag.__all__) == {
        "DAGNode", "FunctionNode", "ClassNode", "ClassMethodNode", "InputNode",
        "InputAttributeNode", "MultiOutputNode", "DAGInputData",
        "PARENT_CLASS_NODE_KEY", "PREV_CLASS_METHOD_CALL_KEY"}
    for name in dag.__all__:
        assert hasattr(dag, name), name
    for name in ("FunctionNode", "ClassNode", "ClassMethodNode", "InputNode",
                 "InputAttributeNode", "MultiOutputNode"):
        assert issubclass(getattr(dag, name), dag.DAGNode), name
    assert dag.PARENT_CLASS_NODE_KEY == "parent_class_node"
    assert dag.PREV_CLASS_METHOD_CALL_KEY == "prev_class_method_call"


def test_typed_ids_are_rays():
    """ray.NodeID and friends: hex round trips, nil, and the ids the
    runtime hands out are instances."""
    node = miniray.NodeID.from_random()
    assert miniray.NodeID.from_hex(node.hex()) == node
    assert miniray.JobID.nil().is_nil()
    assert issubclass(miniray.ActorID, bytes)
