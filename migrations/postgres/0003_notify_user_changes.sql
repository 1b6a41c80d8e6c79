-- Every change to an account or its scopes is announced on the channel
-- `rpcguard_users` with the account's lower-cased name (empty when it can
-- no longer be found, which means "forget everything"). Each rpcguard
-- instance LISTENs and drops its in-memory copy of that user, so a grant,
-- revoke or delete made anywhere (another instance, the CLI, plain SQL)
-- reaches every instance. NOTIFY is transactional: it is sent at commit.
CREATE OR REPLACE FUNCTION rpcguard_notify_user_change() RETURNS trigger AS $$
DECLARE
    changed TEXT;
BEGIN
    IF TG_TABLE_NAME = 'users' THEN
        IF TG_OP = 'DELETE' THEN
            changed := OLD.username_key;
        ELSE
            changed := NEW.username_key;
        END IF;
    ELSE
        IF TG_OP = 'DELETE' THEN
            SELECT username_key INTO changed FROM users WHERE id = OLD.user_id;
        ELSE
            SELECT username_key INTO changed FROM users WHERE id = NEW.user_id;
        END IF;
    END IF;
    PERFORM pg_notify('rpcguard_users', COALESCE(changed, ''));
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS users_notify ON users;
CREATE TRIGGER users_notify AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION rpcguard_notify_user_change();

DROP TRIGGER IF EXISTS user_scopes_notify ON user_scopes;
CREATE TRIGGER user_scopes_notify AFTER INSERT OR UPDATE OR DELETE ON user_scopes
    FOR EACH ROW EXECUTE FUNCTION rpcguard_notify_user_change();
