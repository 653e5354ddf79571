-- Every update or delete of a workflow is announced on `jobsprint_workflows` (payload
-- `<workspace_id> <workflow_id>`, sent at commit) so gateways drop their cached definition.
CREATE OR REPLACE FUNCTION jobsprint_workflow_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('jobsprint_workflows', OLD.workspace_id || ' ' || OLD.id);
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS workflows_changed ON workflows;
CREATE TRIGGER workflows_changed AFTER UPDATE OR DELETE ON workflows
    FOR EACH ROW EXECUTE FUNCTION jobsprint_workflow_changed();
