%% `left` for the members of a node that went away.
%%
%% When a node dies or is cut off, nobody sends `user_left` for its users:
%% the original's sessions there are gone, and the gproc_dist leader purges
%% their registrations silently. A Rust node tells its own members; this
%% process does the same for the members on its original node: for every
%% chat that has members here, one `user_left` record per member of the
%% lost node, sent to each local member, numbered like any other event
%% (flack_migration_seq).
%%
%% It must read who was on the lost node before the leader's purge reaches
%% this node's replica of the registry. So it watches each connected node
%% with erlang:monitor_node/2, whose {nodedown, Node} the runtime sends as
%% the connection goes down (gen_leader hears of it through a monitor
%% process and a message of its own, and only then purges), runs at high
%% priority, and reads the replica in one ets:select before doing anything
%% else. Numbering and sending (leader calls, which wait for an election
%% when the lost node led) happen afterwards in a process of their own.
%%
%% Each member is announced once per loss of its node: only what is still
%% registered is announced, so a member whose session left (and removed its
%% membership) before the node went down is not announced again.
-module(flack_migration_watch).
-behaviour(gen_server).

-export([start_link/0, lost_members/2, plan/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

init([]) ->
    process_flag(priority, high),
    ok = net_kernel:monitor_nodes(true, [{node_type, visible}]),
    {ok, lists:foldl(fun watch/2, #{}, nodes())}.

%% One monitor per connected node (a second would mean a second `left`).
watch(Node, Watched) ->
    case maps:is_key(Node, Watched) of
        true -> Watched;
        false ->
            erlang:monitor_node(Node, true),
            Watched#{Node => true}
    end.

handle_call(_Request, _From, State) ->
    {reply, {error, unknown_call}, State}.

handle_cast(_Request, State) ->
    {noreply, State}.

%% From monitor_node/2: the connection is gone. Read first, then act.
handle_info({nodedown, Node}, Watched) ->
    Lost = lost_members(gproc, Node),
    case plan(Lost) of
        [] -> ok;
        Plan -> spawn(fun() -> announce(Plan) end)
    end,
    {noreply, maps:remove(Node, Watched)};
%% From net_kernel (3-tuples): a node connected; watch it.
handle_info({nodeup, Node, _Info}, Watched) ->
    {noreply, watch(Node, Watched)};
handle_info({nodedown, _Node, _Info}, State) ->
    {noreply, State};
handle_info(_Message, State) ->
    {noreply, State}.

terminate(_Reason, _State) ->
    ok.

%% What the registry replica Table says about Node's processes, in one
%% pass: {member, Chat, Pid} for each chat membership (a {p,g,Chat} with a
%% binary Chat: other properties are not chats), {user, Pid, UserId}
%% for each user registration, {counter, Chat, Value} for each sequence
%% counter Node's processes own.
-spec lost_members(ets:tab(), node()) -> [tuple()].
lost_members(Table, Node) ->
    OnNode = fun(Var) -> [{'==', {node, Var}, Node}] end,
    ets:select(Table,
               [{{{{p, g, '$1'}, '$2'}, '_', '_'}, [{is_binary, '$1'}, {is_pid, '$2'} | OnNode('$2')],
                 [{{member, '$1', '$2'}}]},
                {{{'$2', {n, g, '$2'}}, '$3'}, [{is_pid, '$2'} | OnNode('$2')],
                 [{{user, '$2', '$3'}}]},
                {{{{c, g, {flack_seq, '$1'}}, '$2'}, '_', '$3'}, [{is_pid, '$2'} | OnNode('$2')],
                 [{{counter, '$1', '$3'}}]}]).

%% Who hears what: for each chat with a member on the lost node, the
%% lost members' user ids ({Chat, [UserId]}, one per lost member). Chats are kept
%% whatever the local membership; announce/1 looks local members up when
%% it sends. Members without a user registration (never authenticated, or
%% already gone) are skipped: there is no user id to announce. Counter
%% values come first as {counter, Chat, Value}.
-spec plan([tuple()]) -> [tuple()].
plan(Lost) ->
    Users = maps:from_list([{Pid, user_id(Opts)} || {user, Pid, Opts} <- Lost]),
    Counters = [{counter, Chat, Value} || {counter, Chat, Value} <- Lost],
    ByChat = lists:foldl(
               fun({member, Chat, Pid}, Acc) ->
                       case maps:get(Pid, Users, undefined) of
                           undefined -> Acc;
                           UserId -> Acc#{Chat => maps:get(Chat, Acc, []) ++ [UserId]}
                       end;
                  (_, Acc) -> Acc
               end, #{}, Lost),
    case maps:size(ByChat) of
        0 -> [];
        _ -> Counters ++ lists:sort([{Chat, Ids} || {Chat, Ids} <- maps:to_list(ByChat)])
    end.

user_id(Opts) when is_list(Opts) ->
    case lists:keyfind(attrs, 1, Opts) of
        {attrs, Attrs} -> proplists:get_value(user_id, Attrs);
        false -> undefined
    end;
user_id(_) ->
    undefined.

%% Numbers and sends the plan's `user_left` records to this node's members
%% of each chat (the lost members are gone from the replica by now, or
%% are on another node: neither is sent to).
announce(Plan) ->
    [flack_migration_seq:remember(Chat, Value) || {counter, Chat, Value} <- Plan],
    lists:foreach(
      fun({Chat, UserIds}) ->
              case local_members(Chat) of
                  [] -> ok;
                  Members ->
                      lists:foreach(
                        fun(UserId) ->
                                Left = {user_left, Chat, UserId, timestamp(),
                                        flack_migration_seq:next(Chat)},
                                [Pid ! Left || Pid <- Members]
                        end, UserIds)
              end;
         (_) -> ok
      end, Plan).

local_members(Chat) ->
    [Pid || Pid <- gproc:lookup_pids({p, g, Chat}), node(Pid) =:= node()].

timestamp() ->
    {{Y, Mo, D}, {H, Mi, S}} = erlang:universaltime(),
    iolist_to_binary(io_lib:format("~4..0w-~2..0w-~2..0wT~2..0w:~2..0w:~2..0wZ",
                                   [Y, Mo, D, H, Mi, S])).
